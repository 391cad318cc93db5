from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.api import TextField, id_field
from incidents import rules
from incidents.models import Incident, SeriousKind
from incidents.services import MAX_REFERENCE, MAX_TEXT, MAX_TITLE

SEALED_HELP = (
    "Kept on the incident and sealed in the ledger's vault under the incident's own reference: never in clear."
)
MOMENT_HELP = "ISO 8601 with its UTC offset"


def _ids(what: str) -> serializers.ListField:
    return serializers.ListField(
        child=id_field(), required=False, default=list, max_length=100,
        help_text=f"ids of {what} of the incident's project",
    )  # fmt: skip


class IncidentRegisterSerializer(serializers.Serializer):
    title = TextField(max_length=MAX_TITLE, help_text=SEALED_HELP)
    description = TextField(max_length=MAX_TEXT, help_text=SEALED_HELP)
    aware_at = serializers.CharField(
        max_length=64, help_text=f"when the provider became aware of it (the Art. 73 clock starts here); {MOMENT_HELP}"
    )
    occurred_at = serializers.CharField(
        max_length=64, required=False, allow_null=True, default=None,
        help_text=f"when it happened, if known; {MOMENT_HELP}",
    )  # fmt: skip
    ai_systems = _ids("AI systems")
    deployments = _ids("deployments")


class IncidentLinkSerializer(serializers.Serializer):
    ai_systems = _ids("AI systems")
    deployments = _ids("deployments")


class IncidentClassifySerializer(serializers.Serializer):
    serious = serializers.BooleanField(
        help_text="a serious incident (Art. 3(49)) or a widespread infringement (Art. 3(61))"
    )
    serious_kind = serializers.ChoiceField(
        choices=SeriousKind.choices, required=False, allow_blank=True, default="",
        help_text="what makes it serious; it sets the Art. 73 clock. Empty when not serious.",
    )  # fmt: skip


class IncidentReportSerializer(serializers.Serializer):
    reported_at = serializers.CharField(max_length=64, help_text=f"when the report was made; {MOMENT_HELP}")
    reference = TextField(max_length=MAX_REFERENCE, help_text="the authority's reference of the report (in clear)")
    complete = serializers.BooleanField(
        required=False, default=True,
        help_text="false: an initial, incomplete report (Art. 73(5)); a complete one follows",
    )  # fmt: skip


class IncidentCloseSerializer(serializers.Serializer):
    root_cause = TextField(max_length=MAX_TEXT, help_text=SEALED_HELP)
    corrective_action = TextField(max_length=MAX_TEXT, help_text=SEALED_HELP)


class ClockSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    article = serializers.CharField()
    why = serializers.CharField()


class IncidentSerializer(serializers.Serializer):
    """An incident with its Art. 73 clock: the due date, the days left (negative: overdue), the
    clock's article, and the state of the clock in words."""

    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    number = serializers.IntegerField()
    reference = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    state = serializers.CharField()
    ai_systems = serializers.SerializerMethodField()
    deployments = serializers.SerializerMethodField()
    occurred_at = serializers.DateTimeField(allow_null=True)
    aware_at = serializers.DateTimeField()
    serious = serializers.BooleanField(allow_null=True)
    serious_kind = serializers.CharField()
    classified_by = serializers.CharField(source="classified_by.username", allow_null=True, default=None)
    classified_at = serializers.DateTimeField(allow_null=True)
    report_due_at = serializers.DateTimeField(allow_null=True)
    clock = serializers.SerializerMethodField()
    days_left = serializers.SerializerMethodField()
    overdue = serializers.SerializerMethodField()
    clock_status = serializers.SerializerMethodField()
    authority_reported_at = serializers.DateTimeField(allow_null=True)
    authority_completed_at = serializers.DateTimeField(allow_null=True)
    authority_reference = serializers.CharField()
    root_cause = serializers.CharField()
    corrective_action = serializers.CharField()
    closed_at = serializers.DateTimeField(allow_null=True)
    closed_by = serializers.CharField(source="closed_by.username", allow_null=True, default=None)
    reported_by = serializers.CharField(source="reported_by.username")
    created_at = serializers.DateTimeField()
    reminded_at = serializers.DateTimeField(allow_null=True)
    overdue_recorded_at = serializers.DateTimeField(allow_null=True)

    def get_ai_systems(self, obj: Incident) -> list[int]:
        return sorted(s.pk for s in obj.ai_systems.all())

    def get_deployments(self, obj: Incident) -> list[int]:
        return sorted(d.pk for d in obj.deployments.all())

    @extend_schema_field(ClockSerializer(allow_null=True))
    def get_clock(self, obj: Incident) -> dict[str, Any] | None:
        if not obj.serious:
            return None
        clock = rules.clock_of(obj.serious_kind)
        return ClockSerializer({"days": clock.days, "article": clock.article, "why": clock.why}).data

    def get_days_left(self, obj: Incident) -> int | None:
        if obj.report_due_at is None or obj.authority_reported_at is not None:
            return None
        return rules.days_left(obj.report_due_at, timezone.now())

    def get_overdue(self, obj: Incident) -> bool:
        return rules.is_overdue(obj.report_due_at, obj.authority_reported_at, timezone.now())

    def get_clock_status(self, obj: Incident) -> str:
        if obj.serious is None:
            return "not classified yet"
        return rules.describe(obj.report_due_at, obj.authority_reported_at, timezone.now())
