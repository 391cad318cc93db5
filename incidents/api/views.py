"""The incident API: the list (filters: state, serious, overdue, project), an incident's detail,
and one view per command (register, link, classify, report, close), each calling one service.
Reads go through the selectors: an incident of a project where the caller holds no role is 404."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db.models import F, QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import CommandView, ListView
from common.errors import DomainError
from governance.models import Project
from incidents import selectors, services
from incidents.api.serializers import (
    IncidentClassifySerializer,
    IncidentCloseSerializer,
    IncidentLinkSerializer,
    IncidentRegisterSerializer,
    IncidentReportSerializer,
    IncidentSerializer,
)
from incidents.models import Incident, IncidentState

ERRORS = {
    400: OpenApiResponse(description="invalid input (the fields named), or a system or deployment not of the project"),
    403: OpenApiResponse(description="your role in the project does not allow this"),
    404: OpenApiResponse(description="no such incident or project, or not in a project of yours"),
    409: OpenApiResponse(description="the incident's state does not allow this (the message says why)"),
}


def _invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


def _moment(field: str, value: str | None) -> datetime | None:
    """An ISO 8601 input with its UTC offset, or a 400 naming ``field``."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(field, f"not an ISO 8601 datetime: {value!r}") from None
    if parsed.tzinfo is None:
        raise _invalid(field, f"{value!r} has no UTC offset (add Z or +01:00)")
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        raise _invalid(field, f"{value!r} is out of range in UTC") from None
    return parsed


def _flag(name: str, value: str | None) -> bool | None:
    if value in (None, ""):
        return None
    if value in ("true", "false"):
        return value == "true"
    raise _invalid(name, f"true or false, got {value!r}")


class IncidentListView(ListView):
    """Incidents of your projects, the nearest report deadline first (incidents with no clock
    after them), each with its Art. 73 clock. Filters: ``state``, ``serious``, ``overdue`` (true:
    the deadline passed with no report), ``project`` (slug)."""

    serializer_class = IncidentSerializer
    list_operation_id = "incidents_list"
    query_parameters = [
        OpenApiParameter("state", str, enum=IncidentState.values, description="open, reported or closed"),
        OpenApiParameter("serious", str, enum=["true", "false"], description="classified serious or not"),
        OpenApiParameter("overdue", str, enum=["true", "false"], description="report deadline passed unreported"),
        OpenApiParameter("project", str, description="project slug"),
    ]

    def get_queryset(self) -> QuerySet[Incident]:
        params = self.request.query_params
        state = params.get("state", "")
        if state and state not in IncidentState.values:
            raise _invalid("state", f"one of {', '.join(IncidentState.values)}, got {state!r}")
        return selectors.incident_list(
            user=self.request.user, state=state, serious=_flag("serious", params.get("serious")),
            overdue=_flag("overdue", params.get("overdue")), project=params.get("project", ""),
        ).order_by(F("report_due_at").asc(nulls_last=True), "pk")  # fmt: skip


class IncidentRegisterView(CommandView):
    """Register an incident of the project (every member but auditors). Systems and deployments
    must be the project's own. The title and description are sealed in the ledger."""

    operation_id = "incidents_register"
    input_serializer = IncidentRegisterSerializer
    output_serializer = IncidentSerializer
    status_code = status.HTTP_201_CREATED
    errors = ERRORS

    def target(self, request: Request, slug: str) -> Project:
        return selectors.project_get(user=request.user, slug=slug)

    def run(self, request: Request, project: Project, data: dict[str, Any]) -> Any:
        return services.incident_register(
            actor=request.user, project=project, title=data["title"], description=data["description"],
            aware_at=_moment("aware_at", data["aware_at"]), occurred_at=_moment("occurred_at", data["occurred_at"]),
            ai_systems=data["ai_systems"], deployments=data["deployments"],
        )  # fmt: skip


class IncidentDetailView(APIView):
    @extend_schema(operation_id="incidents_retrieve", responses={200: IncidentSerializer, **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """An incident with its Art. 73 clock, links, report and closure."""
        return Response(IncidentSerializer(selectors.incident_get(user=request.user, pk=pk)).data)


class _IncidentCommand(CommandView):
    output_serializer = IncidentSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> Incident:
        return selectors.incident_get(user=request.user, pk=pk)


class IncidentLinkView(_IncidentCommand):
    """Add AI systems and deployments of the incident's project to what it concerns (every
    member but auditors)."""

    operation_id = "incidents_link"
    input_serializer = IncidentLinkSerializer

    def run(self, request: Request, incident: Incident, data: dict[str, Any]) -> Any:
        return services.incident_link(
            actor=request.user, incident=incident, ai_systems=data["ai_systems"], deployments=data["deployments"]
        )


class IncidentClassifyView(_IncidentCommand):
    """Classify the incident serious (with what makes it so: it sets the Art. 73 clock) or not
    (compliance officers, platform admins). Re-classifying recomputes the due date."""

    operation_id = "incidents_classify"
    input_serializer = IncidentClassifySerializer

    def run(self, request: Request, incident: Incident, data: dict[str, Any]) -> Any:
        return services.incident_classify(
            actor=request.user, incident=incident, serious=data["serious"], serious_kind=data["serious_kind"]
        )


class IncidentReportView(_IncidentCommand):
    """Record the report to the market surveillance authority: when, the authority's reference,
    and whether it is complete or an initial one (Art. 73(5)) (compliance officers, platform admins)."""

    operation_id = "incidents_report"
    input_serializer = IncidentReportSerializer

    def run(self, request: Request, incident: Incident, data: dict[str, Any]) -> Any:
        return services.incident_report_to_authority(
            actor=request.user, incident=incident, reported_at=_moment("reported_at", data["reported_at"]),
            reference=data["reference"], complete=data["complete"],
        )  # fmt: skip


class IncidentCloseView(_IncidentCommand):
    """Close the incident with its root cause and the corrective action taken (compliance
    officers, platform admins). A serious incident closes only once reported completely."""

    operation_id = "incidents_close"
    input_serializer = IncidentCloseSerializer

    def run(self, request: Request, incident: Incident, data: dict[str, Any]) -> Any:
        return services.incident_close(
            actor=request.user, incident=incident, root_cause=data["root_cause"],
            corrective_action=data["corrective_action"],
        )  # fmt: skip
