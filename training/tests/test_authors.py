"""The engineer who requested a fine-tune run does not approve it, even when a colleague
submitted the approval request ("an ML engineer other than the requester approves it")."""

from __future__ import annotations

from typing import Any

import pytest

from governance.services import PolicyViolation, approval_request_decide, approval_request_submit
from training.tests.conftest import request_run

pytestmark = pytest.mark.django_db


def test_the_runs_requester_does_not_approve_it_when_a_colleague_submitted(ready: dict[str, Any]) -> None:
    run = request_run(ready)  # requested by ml_engineer
    request = approval_request_submit(
        actor=ready["ml-engineer-2"], subject_type="fine_tune_run", subject_id=str(run.pk),
        action="fine_tune_run.execute",
    )  # fmt: skip
    with pytest.raises(PolicyViolation, match="whoever made the fine_tune_run never decides on it") as caught:
        approval_request_decide(actor=ready["ml_engineer"], request_id=request.pk, decision="approve", reason="mine")
    assert caught.value.code == "self_approval"
    request.refresh_from_db()
    assert not request.decisions.exists()
