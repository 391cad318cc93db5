from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import CommandView, ListView, validated
from common.errors import DomainError
from systems import selectors, services
from systems.api.serializers import (
    AISystemCreateSerializer,
    AISystemDetailSerializer,
    AISystemSerializer,
    AISystemUpdateSerializer,
    ApprovalRequestRefSerializer,
    ClassificationCreateSerializer,
    ClassificationSerializer,
    ClassificationSubmitSerializer,
    QuestionnaireSerializer,
)
from systems.models import AISystem, AISystemClassification, RiskClass
from systems.rules import QUESTIONS

ERRORS = {
    400: OpenApiResponse(description="invalid input, naming the field"),
    403: OpenApiResponse(description="the caller's role may not do this"),
    404: OpenApiResponse(description="no such object the caller may see"),
    409: OpenApiResponse(description="conflicts with the object's state"),
    422: OpenApiResponse(description="refused by the policy"),
}


def _owner(username: str | None, default: Any) -> Any:
    if username is None:
        return default
    owner = get_user_model().objects.filter(username=username, is_active=True).first()
    if owner is None:
        raise DomainError("invalid_input", f"owner: no user {username!r}", fields={"owner": [f"no user {username!r}"]})
    return owner


def _detail(system: AISystem) -> dict[str, Any]:
    classifications = list(selectors.classification_list(system=system))
    context = {
        "deployments": selectors.system_deployments(system), "classifications": classifications,
        "requests": selectors.latest_requests(classifications),
    }  # fmt: skip
    return AISystemDetailSerializer(system, context=context).data


class ProjectAISystemsView(ListView):
    """The project's AI systems (use cases), with their risk class and counts of deployments and
    classifications."""

    serializer_class = AISystemSerializer
    list_operation_id = "ai_systems_list"
    filters = {"risk_class": "risk_class"}

    def get_queryset(self) -> QuerySet[AISystem]:
        project = selectors.project_get(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.ai_system_list(user=self.request.user, project=project)

    @extend_schema(
        operation_id="ai_systems_register", request=AISystemCreateSerializer,
        responses={201: AISystemDetailSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, slug: str) -> Response:
        """Register an AI system (ML engineers, compliance officers, platform admins); it is
        unclassified until a classification of it is approved."""
        project = selectors.project_get(user=request.user, slug=slug)
        data = dict(validated(AISystemCreateSerializer, request))
        owner = _owner(data.pop("owner", None), request.user)
        system = services.ai_system_register(actor=request.user, project=project, owner=owner, **data)
        system = selectors.ai_system_get(user=request.user, pk=system.pk)
        return Response(_detail(system), status=status.HTTP_201_CREATED)


class AISystemDetailView(APIView):
    @extend_schema(operation_id="ai_systems_retrieve", responses={200: AISystemDetailSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        """A system with its deployments, the model versions they serve and its classifications."""
        return Response(_detail(selectors.ai_system_get(user=request.user, pk=pk)))


class AISystemUpdateView(CommandView):
    """Change a system's name, purpose, description, human oversight, deployers or owner (by
    username; ML engineers, compliance officers, platform admins); the ledger entry names the fields
    changed. Its class changes only through an approved classification."""

    operation_id = "ai_systems_update"
    input_serializer = AISystemUpdateSerializer
    output_serializer = AISystemDetailSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> AISystem:
        return selectors.ai_system_get(user=request.user, pk=pk)

    def run(self, request: Request, target: AISystem, data: dict[str, Any]) -> AISystem:
        changes = dict(data)
        if "owner" in changes:
            changes["owner"] = _owner(changes["owner"], None)
        system = services.ai_system_update(actor=request.user, system=target, **changes)
        return selectors.ai_system_get(user=request.user, pk=system.pk)

    def answer(self, result: AISystem) -> Any:
        return _detail(result)


class AISystemClassificationsView(ListView):
    """The system's classifications, newest first: the answers, the class they give and why, the
    state, and the latest approval request about each."""

    serializer_class = ClassificationSerializer
    list_operation_id = "ai_system_classifications_list"

    def get_queryset(self) -> QuerySet[AISystemClassification]:
        system = selectors.ai_system_get(user=self.request.user, pk=self.kwargs["pk"])
        return selectors.classification_list(system=system)

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        """The page's classifications with their latest approval requests (one query for the page)."""
        if args:
            page = list(args[0])
            args = (page, *args[1:])
            kwargs.setdefault("context", {**self.get_serializer_context(), "requests": selectors.latest_requests(page)})
        return super().get_serializer(*args, **kwargs)

    @extend_schema(
        operation_id="ai_system_classifications_create", request=ClassificationCreateSerializer,
        responses={201: ClassificationSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Classify the system: the questionnaire's answers give its risk class (a draft; submit it
        for approval next). A missing, unknown or wrongly answered question is a 400 naming it."""
        system = selectors.ai_system_get(user=request.user, pk=pk)
        data = validated(ClassificationCreateSerializer, request)
        classification = services.ai_system_classification_create(
            actor=request.user, system=system, answers=data["answers"]
        )
        return Response(ClassificationSerializer(classification, context={"requests": {}}).data, status=201)


class ClassificationSubmitView(CommandView):
    """Ask for the classification's approval (``ai_system_classification.approve``; ML engineers and
    platform admins): a compliance officer approves, and the platform admin too for a prohibited
    finding or an Art. 6(3) exception. 409 when it is approved already or a later one replaced it."""

    operation_id = "ai_system_classifications_submit"
    input_serializer = ClassificationSubmitSerializer
    output_serializer = ApprovalRequestRefSerializer
    status_code = status.HTTP_201_CREATED
    errors = ERRORS

    def target(self, request: Request, pk: int) -> AISystemClassification:
        return selectors.classification_get(user=request.user, pk=pk)

    def run(self, request: Request, target: AISystemClassification, data: dict[str, Any]) -> Any:
        return services.ai_system_classification_submit(
            actor=request.user, classification=target, comment=data.get("comment", "")
        )


class QuestionnaireView(APIView):
    @extend_schema(operation_id="ai_systems_questionnaire", responses={200: QuestionnaireSerializer})
    def get(self, request: Request) -> Response:
        """The risk classification questionnaire (EU AI Act): each question's id, text, article,
        kind and choices, for a client to render; answers are posted by question id."""
        return Response(
            QuestionnaireSerializer(
                {"questions": [q.describe() for q in QUESTIONS], "risk_classes": list(RiskClass.values)}
            ).data
        )
