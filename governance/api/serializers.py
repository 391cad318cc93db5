from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.api import ReasonInputSerializer, ledgered_text
from governance.models import Project
from governance.roles import Role


class ProjectRoleSerializer(serializers.Serializer):
    project = serializers.SlugField()
    roles = serializers.ListField(child=serializers.CharField())


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    kind = serializers.ChoiceField(choices=["person", "service_account"])
    is_staff = serializers.BooleanField()
    projects = ProjectRoleSerializer(many=True)


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["slug", "name", "description", "created_at"]
        read_only_fields = fields


class ApprovalDecisionSerializer(serializers.Serializer):
    approver = serializers.CharField(source="approver.username")
    role = serializers.CharField()
    decision = serializers.CharField()
    reason = serializers.CharField()
    ledger_index = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class ApprovalRequestSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    action = serializers.CharField()
    subject_type = serializers.CharField()
    subject_id = serializers.CharField()
    subject_digest = serializers.CharField()
    context = serializers.DictField(child=serializers.CharField())
    rule = serializers.JSONField()
    policy_hash = serializers.CharField()
    requester = serializers.CharField(source="requester.username")
    comment = serializers.CharField()
    state = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    closed_at = serializers.DateTimeField(allow_null=True)
    lapsed_at = serializers.DateTimeField(allow_null=True, help_text="when the approval lapsed (state lapsed)")
    lapse_reason = serializers.CharField(help_text="why the approval lapsed: its subject changed or was erased")
    decisions = ApprovalDecisionSerializer(many=True, source="decisions.all")

    def to_representation(self, instance: Any) -> dict[str, Any]:
        """The fields above, written out: every decision answers with this, and DRF's generic walk
        (a deep copy of 16 fields per response) cost more than the rest of the answer. The fields
        stay declared for the OpenAPI schema; governance/tests/test_serializers.py holds the two
        outputs equal."""
        when = _DATETIME.to_representation
        return {
            "id": int(instance.id),
            "project": str(instance.project.slug),
            "action": str(instance.action),
            "subject_type": str(instance.subject_type),
            "subject_id": str(instance.subject_id),
            "subject_digest": str(instance.subject_digest),
            "context": {str(key): None if value is None else str(value) for key, value in instance.context.items()},
            "rule": instance.rule,
            "policy_hash": str(instance.policy_hash),
            "requester": str(instance.requester.username),
            "comment": str(instance.comment),
            "state": str(instance.state),
            "created_at": when(instance.created_at),
            "expires_at": None if instance.expires_at is None else when(instance.expires_at),
            "closed_at": None if instance.closed_at is None else when(instance.closed_at),
            "lapsed_at": None if instance.lapsed_at is None else when(instance.lapsed_at),
            "lapse_reason": str(instance.lapse_reason),
            "decisions": [
                {
                    "approver": str(decision.approver.username),
                    "role": str(decision.role),
                    "decision": str(decision.decision),
                    "reason": str(decision.reason),
                    "ledger_index": int(decision.ledger_index),
                    "created_at": when(decision.created_at),
                }
                for decision in instance.decisions.all()
            ],
        }


_DATETIME = serializers.DateTimeField()  # unbound: the settings' format, in the current time zone


class ApproveInputSerializer(ReasonInputSerializer):
    role = serializers.ChoiceField(
        choices=[role.value for role in Role], required=False,
        help_text="The slot to fill, for an approver who holds more than one of the rule's roles "
        "(default: the first open slot of a role they hold).",
    )  # fmt: skip


class SubmitSerializer(serializers.Serializer):
    action = serializers.CharField(max_length=100)
    comment = ledgered_text(required=False, allow_blank=True, default="", max_length=4000)
    environment = serializers.CharField(
        required=False, max_length=50,
        help_text="the environment the request is for; a waiver's scope (staging, production or any)",
    )  # fmt: skip
    risk_tier = serializers.CharField(required=False, max_length=50)
    deployment = serializers.CharField(
        required=False, max_length=20, help_text="a waiver's scope narrowed to one deployment (its id)"
    )
    # What a waiver's accepted risk is for, in words (required for a waiver).
    use = ledgered_text(required=False, max_length=200)


class BreakGlassInputSerializer(serializers.Serializer):
    justification = ledgered_text(max_length=4000)


class BreakGlassReviewSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    request = serializers.IntegerField(source="request_id")
    project = serializers.CharField(source="request.project.slug")
    admin = serializers.CharField(source="admin.username")
    justification = serializers.CharField()
    opened_at = serializers.DateTimeField()
    due_at = serializers.DateTimeField()
    overdue = serializers.SerializerMethodField()
    outcome = serializers.CharField()
    note = serializers.CharField()
    closed_at = serializers.DateTimeField(allow_null=True)

    def get_overdue(self, obj: Any) -> bool:
        from django.utils import timezone

        return obj.closed_at is None and obj.due_at < timezone.now()


class ReviewCloseSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=["upheld", "revoked"])
    note = ledgered_text(max_length=4000)


class ApiTokenSerializer(serializers.Serializer):
    """A token as its owner and its managers see it: never the token itself, which is shown once."""

    prefix = serializers.CharField(help_text="the token's public part (gov_<prefix>_…), its name in the ledger")
    name = serializers.CharField()
    user = serializers.CharField(source="user.username")
    state = serializers.ChoiceField(choices=["live", "expired", "revoked"])
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="to the minute")
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="the token: shown in this answer only, never again")


class ApiTokenRevokeSerializer(serializers.Serializer):
    # Optional: a holder revoking their own token need not say why; a manager revoking a colleague's
    # leaked one usually will.
    reason = ledgered_text(required=False)


class ApiTokenCreateSerializer(serializers.Serializer):
    name = ledgered_text(max_length=100)
    user = serializers.CharField(
        required=False, max_length=150,
        help_text="a service account you manage (you own it, or it works in a project you are platform admin of); "
        "left out, the token is yours",
    )  # fmt: skip
    expires_in_days = serializers.IntegerField(
        required=False, default=90, min_value=1,
        help_text="days until the token expires: 1 to API_TOKEN_MAX_DAYS (365 by default); 90 if left out",
    )  # fmt: skip
