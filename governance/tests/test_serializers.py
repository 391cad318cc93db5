"""The approval answer's hand-written representation equals DRF's generic one, field for field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import serializers

from governance.api.serializers import ApprovalRequestSerializer
from governance.models import ApprovalRequest
from governance.roles import Role
from governance.selectors import approval_history
from governance.services import approval_request_decide, project_role_grant
from tests.test_approvals import _submit, _version


def _generic(instance: Any) -> dict[str, Any]:
    return serializers.Serializer.to_representation(ApprovalRequestSerializer(), instance)


@pytest.mark.django_db
def test_the_written_out_representation_is_the_generic_one(people: dict[str, Any]) -> None:
    pending = _submit(people, _version(people))
    closed = _submit(people, _version(people))
    second = get_user_model().objects.create_user(username="second-steward")
    project_role_grant(
        actor=people["system"], project=people["project"], user=second, role=Role.DATA_STEWARD, reason="test setup"
    )
    ApprovalRequest.objects.filter(pk=pending.pk).update(
        rule={**pending.rule, "approvals": [{"role": "data_steward", "count": 2}]},
        context={"environment": "production", "ticket": 42, "none": None},
        expires_at=timezone.now() + timedelta(hours=5),
    )
    approval_request_decide(actor=people["data_steward"], request_id=pending.pk, decision="approve", reason="one")
    approval_request_decide(actor=second, request_id=closed.pk, decision="reject", reason="no")
    for pk in (pending.pk, closed.pk):
        instance = approval_history(ApprovalRequest.objects.get(pk=pk))
        written = ApprovalRequestSerializer(instance).data
        assert written == _generic(instance)
        assert list(written) == list(ApprovalRequestSerializer().fields)  # same keys, same order
    listed = ApprovalRequestSerializer(
        [approval_history(r) for r in ApprovalRequest.objects.order_by("pk")], many=True
    ).data
    assert [dict(item) for item in listed] == [_generic(r) for r in ApprovalRequest.objects.order_by("pk")]
    first = listed[0]
    assert first["context"] == {"environment": "production", "ticket": "42", "none": None}
    assert first["expires_at"].endswith("Z") and len(first["decisions"]) == 1
    assert listed[1]["state"] == "rejected" and listed[1]["closed_at"] is not None
