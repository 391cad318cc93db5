"""A Hypothesis state machine over the approval workflow: requests, approvals, rejections,
withdrawals, subject changes (and changes back) and expiries in any order. After every step it
checks separation of duties, quorum, no double vote, final terminal states (an approval may only
lapse, and a lapse is final), approvals bound to the digest and never counting again once lapsed,
and one ledger entry per transition."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from audits.ledger.models import Entry
from common.errors import DomainError
from governance.models import ApprovalDecision, ApprovalRequest, ApprovalState
from governance.permissions import SYSTEM_USERNAME
from governance.roles import Role
from governance.services import (
    approval_holds,
    approval_request_decide,
    approval_request_submit,
    approval_request_withdraw,
    approval_requests_expire_due,
    project_create,
    project_role_grant,
)
from registry.models import DatasetVersion, PiiScan
from registry.services import dataset_version_digest, dataset_version_upload, pii_scan_run
from registry.tests.conftest import make_dataset

ACTION = "dataset_version.use_for_training"
TERMINAL = {
    ApprovalState.APPROVED, ApprovalState.REJECTED, ApprovalState.WITHDRAWN, ApprovalState.EXPIRED,
    ApprovalState.LAPSED,
}  # fmt: skip


class ApprovalWorkflow(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        User = get_user_model()
        self.system = User.objects.get(username=SYSTEM_USERNAME)
        self.project = project_create(actor=self.system, slug="flow", name="Flow")
        self.users: dict[str, Any] = {}
        self.roles: dict[str, set[str]] = {}
        for name, roles in {
            "requester": [Role.ML_ENGINEER], "steward1": [Role.DATA_STEWARD], "steward2": [Role.DATA_STEWARD],
            "officer": [Role.COMPLIANCE_OFFICER], "both": [Role.DATA_STEWARD, Role.COMPLIANCE_OFFICER],
            "auditor": [Role.AUDITOR],
        }.items():  # fmt: skip
            user = User.objects.create_user(username=f"flow-{name}")
            for role in roles:
                project_role_grant(
                    actor=self.system, project=self.project, user=user, role=role, reason="stateful test"
                )
            self.users[name] = User.objects.get(pk=user.pk)
            self.roles[name] = {role.value for role in roles}
        people = {"project": self.project, "data_steward": self.users["steward1"]}
        dataset = make_dataset(people, slug="flow")
        self.versions = []
        for i in range(3):
            version, _ = dataset_version_upload(
                actor=self.users["requester"], dataset=dataset, filename="t.jsonl", data=f'{{"t": "{i}"}}\n'.encode()
            )
            with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
                pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=self.system)
            self.versions.append(version.pk)
        # Each version's governed fields as uploaded, to change it back to (a review flipped back).
        self.originals = {
            pk: DatasetVersion.objects.values("number", "review_note").get(pk=pk) for pk in self.versions
        }  # fmt: skip
        self.ledger_start = Entry.objects.count()
        self.transitions = 0  # successful submissions, decisions, withdrawals, expiries
        self.seen_terminal: dict[int, str] = {}
        self.seen_mismatched: set[int] = set()  # approvals a check has seen not matching their subject

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    def _requests(self) -> list[ApprovalRequest]:
        return list(ApprovalRequest.objects.filter(project=self.project).order_by("pk"))

    @rule(version=st.integers(0, 2), high=st.booleans())
    def submit(self, version: int, high: bool) -> None:
        try:
            approval_request_submit(
                actor=self.users["requester"], subject_type="dataset_version", subject_id=str(self.versions[version]),
                action=ACTION, context={"risk_tier": "high"} if high else {},
            )  # fmt: skip
            self.transitions += 1
        except DomainError as exc:
            assert exc.code == "already_pending"

    @rule(pick=st.integers(0, 20), who=st.sampled_from(["requester", "steward1", "steward2", "officer", "both", "auditor"]),
          decision=st.sampled_from(["approve", "reject"]))  # fmt: skip
    def decide(self, pick: int, who: str, decision: str) -> None:
        requests = self._requests()
        if not requests:
            return
        request = requests[pick % len(requests)]
        try:
            approval_request_decide(actor=self.users[who], request_id=request.pk, decision=decision, reason="stateful")
            self.transitions += 1
        except DomainError as exc:
            slot_roles = {slot["role"] for slot in request.rule["approvals"]}
            if who == "requester":
                assert exc.code == "self_approval"
            elif not slot_roles & self.roles[who]:
                assert exc.code == "not_an_approver"
            else:
                assert exc.code in {
                    "request_closed",
                    "request_expired",
                    "already_decided",
                    "stale_digest",
                    "slot_filled",
                }

    @rule(pick=st.integers(0, 20))
    def withdraw(self, pick: int) -> None:
        requests = self._requests()
        if requests:
            try:
                approval_request_withdraw(
                    actor=self.users["requester"], request_id=requests[pick % len(requests)].pk, reason="r"
                )
                self.transitions += 1
            except DomainError as exc:
                assert exc.code == "request_closed"

    @rule(version=st.integers(0, 2))
    def change_subject(self, version: int) -> None:
        # A new review changes the version's governed fields, hence its digest (no ledger-worthy
        # transition of a request: requests bound to the old digest must stop counting).
        current = DatasetVersion.objects.get(pk=self.versions[version])
        DatasetVersion.objects.filter(pk=current.pk).update(
            review_note=current.review_note + "x", number=current.number + 10
        )

    @rule(version=st.integers(0, 2))
    def change_subject_back(self, version: int) -> None:
        # Back to the digest it had when uploaded: an approval that lapsed meanwhile stays lapsed.
        DatasetVersion.objects.filter(pk=self.versions[version]).update(**self.originals[self.versions[version]])

    @rule(pick=st.integers(0, 20))
    def expire(self, pick: int) -> None:
        requests = self._requests()
        if requests:
            ApprovalRequest.objects.filter(pk=requests[pick % len(requests)].pk).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
            self.transitions += approval_requests_expire_due(actor=self.system)

    @invariant()
    def rules_hold(self) -> None:
        requests = self._requests()
        for request in requests:
            decisions = list(ApprovalDecision.objects.filter(request=request))
            approvers = [d.approver_id for d in decisions]
            assert request.requester_id not in approvers  # separation of duties
            assert len(approvers) == len(set(approvers))  # no double vote, one slot per person
            assert all(d.subject_digest == request.subject_digest for d in decisions)
            filled: dict[str, int] = {}
            for d in decisions:
                if d.decision == "approve":
                    filled[d.role] = filled.get(d.role, 0) + 1
            slots = {s["role"]: s["count"] for s in request.rule["approvals"]}
            assert all(filled.get(role, 0) <= count for role, count in slots.items())  # never over-filled
            assert set(filled) <= set(slots)
            if request.state == ApprovalState.APPROVED:
                assert filled == slots  # exactly the quorum
            if request.pk in self.seen_terminal:
                before = self.seen_terminal[request.pk]
                # Terminal states are final, but for an approval that lapses (its subject changed).
                assert request.state == before or (before, request.state) == (ApprovalState.APPROVED, "lapsed")
                self.seen_terminal[request.pk] = request.state
            elif request.state in TERMINAL:
                self.seen_terminal[request.pk] = request.state
        for pk in self.versions:
            version = DatasetVersion.objects.get(pk=pk)
            holds = approval_holds(
                subject_type="dataset_version",
                subject_id=str(pk),
                action=ACTION,
                digest=dataset_version_digest(version),
            )
            digest = dataset_version_digest(version)
            approved = [r for r in requests if r.subject_id == str(pk) and r.state == ApprovalState.APPROVED]
            self.seen_mismatched.update(r.pk for r in approved if r.subject_digest != digest)
            matching = [
                r for r in approved
                if r.subject_digest == digest and r.pk not in self.seen_mismatched
                and (r.expires_at is None or r.expires_at > timezone.now())
            ]  # fmt: skip
            # An approval counts for its digest only, and never again once seen not matching it.
            assert holds == bool(matching)
        entries = [
            json.loads(bytes(b))["action"]
            for b in Entry.objects.filter(index__gte=self.ledger_start).values_list("body", flat=True)
        ]
        transitions = [a for a in entries if a.startswith("approval.") and a != "approval.lapsed"]
        assert len(transitions) == self.transitions  # one ledger entry per transition
        # The checks above lapse what no longer matches: one entry for each lapse, and a lapsed
        # request never counts again, whatever digest its subject has now.
        lapsed = ApprovalRequest.objects.filter(project=self.project, state=ApprovalState.LAPSED).count()
        assert entries.count("approval.lapsed") == lapsed


@pytest.mark.django_db
def test_the_approval_workflow_state_machine(people: dict[str, Any]) -> None:
    run_state_machine_as_test(
        ApprovalWorkflow,
        settings=settings(
            max_examples=15, stateful_step_count=15, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )  # fmt: skip
