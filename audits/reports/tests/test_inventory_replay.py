"""The inventory's replay (``audits/reports/inventory/replay.py``) on entry bodies written here, for
what the world of test_inventory.py does not reach: break-glass approvals and their review, a lapse,
a rejection, payloads that name a model version by id, a digest no entry carried, sealed reasons,
and the states a deployment passes through. No database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from audits.ledger.services import SEALED_MARK
from audits.reports.inventory import replay as replay_module
from audits.reports.inventory.replay import replay
from audits.reports.inventory.selectors import Inventory, cited_entries

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

W1, W2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def _entry(action: str, subject: tuple[str, str, str | None] | None, payload: Any, actor: str = "someone") -> Any:
    return {
        "action": action, "actor": {"id": "1", "name": actor}, "payload": payload,
        "subject": None if subject is None else {"type": subject[0], "id": subject[1], "digest": subject[2]},
    }  # fmt: skip


def _replay(bodies: list[Any], project: int | None = 1) -> Any:
    return replay((index, body, project) for index, body in enumerate(bodies))


def test_the_replay_reads_the_sealed_mark_the_ledger_writes() -> None:
    assert replay_module.SEALED_MARK == SEALED_MARK


def test_approvals_through_break_glass_review_rejection_and_lapse() -> None:
    dep = ("deployment", "7", "sha256:d")
    state = _replay(
        [
            _entry("deployment.requested", dep, {"name": "a", "environment": "production", "weights": W1}),
            _entry("approval.requested", dep, {"request": 1, "action": "deployment.deploy"}, actor="eng"),
            _entry(
                "approval.slot_filled",
                dep,
                {"request": 1, "decision": "approve", "role": "ml_engineer", "reason": "fine"},
                actor="eng-2",
            ),
            _entry("approval.break_glass", dep, {"request": 1, "justification": "incident 42"}, actor="admin"),
            _entry("approval.break_glass_reviewed", dep, {"request": 1, "outcome": "revoked"}, actor="officer"),
            _entry("approval.requested", dep, {"request": 2, "action": "deployment.deploy"}, actor="eng"),
            _entry(
                "approval.rejected",
                dep,
                {
                    "request": 2,
                    "decision": "reject",
                    "role": "platform_admin",
                    "reason": {SEALED_MARK: "x", "subject": "ref-1"},
                },
                actor="admin",
            ),
            _entry("approval.requested", dep, {"request": 3, "action": "deployment.deploy"}, actor="eng"),
            _entry(
                "approval.approved",
                dep,
                {"request": 3, "decision": "approve", "role": "platform_admin", "reason": "ok"},
                actor="admin",
            ),
            _entry("approval.lapsed", dep, {"request": 3, "reason": "changed"}),
            _entry("approval.withdrawn", dep, {"request": 99, "reason": "never requested in what was read"}),
        ]
    )
    one, two, three = (state.approvals[i] for i in (1, 2, 3))
    assert (one.state, one.entry, one.break_glass_review, one.break_glass_review_entry) == ("approved", 3, "revoked", 4)
    assert [(d.decider, d.role, d.decision, d.entry) for d in one.decisions] == [
        ("eng-2", "ml_engineer", "approve", 2), ("admin", "break_glass", "approve", 3),
    ]  # fmt: skip
    assert (two.state, two.decisions[0].reason) == ("rejected", "[sealed]")  # never the ciphertext
    assert (three.state, three.entry, len(three.decisions)) == ("lapsed", 9, 1)
    assert 99 not in state.approvals
    assert cited_entries(state) == set(range(10))
    text = str(Inventory(at=datetime.now(UTC), state=state, checkpoint=None, proofs={}).as_dict())
    assert "ref-1" not in text and SEALED_MARK not in text


def test_a_deployment_passes_through_its_states_as_the_row_does() -> None:
    dep = ("deployment", "3", None)
    steps = [
        ("deployment.requested", "requested"), ("deployment.granted", "starting"),
        ("deployment.manifests_rendered", "handed_off"), ("deployment.live", "live"),
        ("deployment.client_credential_issued", "live"), ("deployment.rolled_back", "replaced"),
        ("deployment.granted", "starting"), ("deployment.refused", "refused"), ("deployment.retired", "retired"),
    ]  # fmt: skip
    bodies: list[Any] = []
    for action, expected in steps:
        bodies.append(_entry(action, dep, {"weights": W1} if action == "deployment.requested" else {}))
        deployment = _replay(bodies).deployments["3"]
        assert deployment.state == expected, action
    assert deployment.entry == len(steps) - 1 and deployment.requested_entry == 0


def test_payloads_naming_the_model_version_by_id_are_taken_at_their_word_else_the_weights_resolve() -> None:
    state = _replay(
        [
            _entry("model_version.registered", ("model_version", "1", W1), {"model": "p/m", "number": 1}),
            _entry("model_version.registered", ("model_version", "2", W1), {"model": "p/n", "number": 1}),
            _entry("deployment.requested", ("deployment", "5", None), {"weights": W1}),
            _entry("deployment.requested", ("deployment", "6", None), {"weights": W1, "model_version": 2}),
            _entry(
                "security_scan.requested",
                ("security_scan", "8", None),
                {"model_version": W1, "model_version_id": 2, "profile": "baseline"},
            ),
            _entry("security_scan.completed", ("security_scan", "8", None), {"verdict": "failed", "reasons": ["x"]}),
            _entry("deployment.requested", ("deployment", "9", None), {"weights": W2}),
            _entry(
                "fine_tune_run.requested",
                ("fine_tune_run", "4", None),
                {"name": "r", "base": W1, "dataset_versions": ["sha256:nobody"]},
            ),
        ]
    )
    assert state.deployments["5"].model_version.as_dict() == {"id": "1", "digest": W1, "ambiguous": True}
    assert state.deployments["6"].model_version.as_dict() == {"id": "2", "digest": W1, "ambiguous": False}
    assert state.deployments["9"].model_version.as_dict() == {"id": None, "digest": W2, "ambiguous": False}
    scan = state.checks[("security_scan", "8")]
    assert (scan.model_version.id, scan.state, scan.verdict, scan.reasons) == ("2", "completed", "failed", ["x"])
    assert state.checks_of("security_scan", "2") == [scan] and state.checks_of("security_scan", "1") == []
    assert [link.id for link in state.runs["4"].dataset_versions] == [None]  # a digest no entry carried
