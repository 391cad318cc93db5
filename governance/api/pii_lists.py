"""The API of a project's PII lists: read them (any member of the project), add an entry and remove
one (a data steward or a platform admin of the project, through ``governance.services``).

``urlpatterns`` here are included by ``governance/api/urls.py`` under ``api/v1/``:

- ``GET  projects/{slug}/pii-lists/``: the entries, a page at a time;
- ``POST projects/{slug}/pii-lists/``: add one (``kind``, ``match``, ``text``, ``entity``, ``reason``);
  answers 201 with the entry, or 200 with the entry the list already held;
- ``POST pii-list-entries/{id}/remove``: remove one (``reason``).

A value sent to be allowed (``match: value``) is hashed by the service and never stored or
echoed; the answer shows its keyed hash."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import CommandView, ListView, ReasonInputSerializer, TextField, ledgered_text, validated
from governance.models import PiiListEntry, PiiListKind, PiiListMatch, Project
from governance.selectors import project_list
from governance.services.pii_lists import PATTERN_MAX_CHARS, VALUE_MAX_CHARS, pii_list_entry_add, pii_list_entry_remove


class PiiListEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    kind = serializers.ChoiceField(choices=PiiListKind.choices)
    match = serializers.ChoiceField(choices=PiiListMatch.choices)
    entity = serializers.CharField(help_text="the entity type; blank: every type (allow entries only)")
    pattern = serializers.CharField(help_text="the regular expression or the term (blank for a value)")
    value_hash = serializers.CharField(help_text="keyed hash of the allowed value (blank unless match is value)")
    reason = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    ledger_index = serializers.IntegerField()
    removed_at = serializers.DateTimeField(allow_null=True)
    removal_reason = serializers.CharField()


class PiiListEntryAddSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=PiiListKind.choices)
    match = serializers.ChoiceField(choices=PiiListMatch.choices)
    text = TextField(
        max_length=VALUE_MAX_CHARS,
        help_text="the value to allow (hashed, never stored), the regular expression (whole values, "
        f"at most {PATTERN_MAX_CHARS} characters) or the term",
    )
    entity = TextField(required=False, allow_blank=True, default="", max_length=64)
    reason = ledgered_text(max_length=1000)


def _project(user: Any, slug: str) -> Project:
    project = project_list(user=user).filter(slug=slug).first()
    if project is None:  # hidden and missing look the same
        raise Http404("no such project among yours")
    return project


class PiiListEntriesView(ListView):
    """The PII list entries in force in a project you hold a role in; ``POST`` adds one (data steward or
    platform admin of the project): ``kind`` allow or deny, ``match`` value, pattern or term."""

    serializer_class = PiiListEntrySerializer
    list_operation_id = "pii_lists_list"
    filters = {"kind": "kind", "entity": "entity"}

    def get_queryset(self) -> QuerySet[PiiListEntry]:
        project = _project(self.request.user, self.kwargs["slug"])
        entries = PiiListEntry.objects.filter(project=project, removed_at__isnull=True)
        return entries.select_related("project", "created_by").order_by("pk")

    @extend_schema(
        operation_id="pii_lists_add",
        request=PiiListEntryAddSerializer,
        responses={
            201: PiiListEntrySerializer,
            200: OpenApiResponse(PiiListEntrySerializer, description="the list already held this rule"),
            400: OpenApiResponse(description="invalid input: the field at fault is named"),
            403: OpenApiResponse(description="needs the data_steward or platform_admin role in the project"),
            404: OpenApiResponse(description="no such project, or not one of yours"),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        project = _project(request.user, slug)
        data = validated(PiiListEntryAddSerializer, request)
        entry, added = pii_list_entry_add(actor=request.user, project=project, **data)
        return Response(PiiListEntrySerializer(entry).data, status=201 if added else 200)


class PiiListEntryRemoveView(CommandView):
    """Remove an entry from its project's PII lists (data steward or platform admin of the
    project), with a ``reason``; answers the entry, now with ``removed_at``. 409 if it was removed
    already."""

    operation_id = "pii_list_entries_remove"
    input_serializer = ReasonInputSerializer
    output_serializer = PiiListEntrySerializer
    errors = {
        403: OpenApiResponse(description="needs the data_steward or platform_admin role in the project"),
        404: OpenApiResponse(description="no such entry, or not in a project of yours"),
        409: OpenApiResponse(description="the entry was removed already"),
    }

    def target(self, request: Request, pk: int) -> PiiListEntry:
        entry = (
            PiiListEntry.objects.filter(pk=pk, project__in=project_list(user=request.user))
            .select_related("project", "created_by")
            .first()
        )
        if entry is None:
            raise Http404("no such PII list entry among your projects'")
        return entry

    def run(self, request: Request, entry: PiiListEntry, data: dict[str, Any]) -> PiiListEntry:
        return pii_list_entry_remove(actor=request.user, entry=entry, reason=data["reason"])


urlpatterns = [
    path("projects/<slug:slug>/pii-lists/", PiiListEntriesView.as_view(), name="api-pii-lists"),
    path("pii-list-entries/<int:pk>/remove", PiiListEntryRemoveView.as_view(), name="api-pii-list-entry-remove"),
]
