"""Rules and outcomes in words, as the decision page and the inbox say them: every rule shape of
the shipped policies (a new shape fails here until its words are checked), and the other shapes
a policy file may take."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings

from governance.policy import load_policy_set
from governance.rules import open_slots_in_words, outcome_in_words, rule_in_words

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

SCAN = "security scan passed (baseline profile, within 30 days)"
BIAS = "bias within bounds (default profile, within 90 days)"
QUANT = "quantisation within bounds (max perplexity increase 0.05)"
SHIPPED = {
    ("ai_system_classification.approve", (("risk_tier", "prohibited"),)): (
        "2 approvals: a compliance officer and a platform admin; evidence: none; expires after 30 days"
    ),
    ("ai_system_classification.approve", (("risk_tier", "exempted"),)): (
        "2 approvals: a compliance officer and a platform admin; evidence: none; expires after 30 days"
    ),
    ("ai_system_classification.approve", ()): "1 approval: a compliance officer; evidence: none; expires after 30 days",
    ("bias_evaluation.waive", ()): "1 approval: a fairness reviewer; evidence: none; expires after 30 days",
    ("dataset_version.use_for_evaluation", ()): (
        "1 approval: a data steward; evidence: personal data reviewed; expires after 365 days"
    ),
    ("dataset_version.use_for_training", (("risk_tier", "high"),)): (
        "2 approvals: a data steward and a compliance officer; evidence: personal data reviewed; expires after 90 days"
    ),
    ("dataset_version.use_for_training", ()): (
        "1 approval: a data steward; evidence: personal data reviewed; expires after 180 days"
    ),
    ("deployment.deploy", (("environment", "production"), ("risk_class", "high"))): (
        "4 approvals: a platform admin, a compliance officer, a security reviewer and a fairness reviewer; "
        f"evidence: ai system classified, {SCAN}, {BIAS}, training data approved, {QUANT}; expires after 30 days"
    ),
    ("deployment.deploy", (("environment", "production"),)): (
        f"2 approvals: a platform admin and a compliance officer; evidence: ai system classified, {SCAN}, {BIAS}, "
        f"training data approved, {QUANT}; expires after 90 days"
    ),
    ("deployment.deploy", (("environment", "staging"),)): (
        f"1 approval: a platform admin; evidence: ai system classified, {SCAN}, {QUANT}; expires after 30 days"
    ),
    ("deployment.export_feedback", (("environment", "production"),)): (
        "2 approvals: a data steward and a compliance officer; evidence: none; expires after 7 days"
    ),
    ("deployment.export_feedback", ()): "1 approval: a data steward; evidence: none; expires after 7 days",
    ("deployment.monitor", (("environment", "production"),)): (
        "per 60-minute window of at least 50 requests and 10 ratings: error rate above 0.05, guard hit rate above "
        "0.2, latency p95 ms above 5000, negative feedback share above 0.3, prompt chars psi above 0.25; a crossing "
        "opens a review, notifies platform admins and compliance officers and pauses the deployment"
    ),
    ("deployment.monitor", (("environment", "staging"),)): (
        "per 60-minute window of at least 20 requests and 5 ratings: error rate above 0.1, guard hit rate above "
        "0.5, latency p95 ms above 10000, negative feedback share above 0.5, prompt chars psi above 0.25; a crossing "
        "opens a review, notifies platform admins and leaves the deployment serving"
    ),
    ("fine_tune_run.execute", (("resource_tier", "multi_gpu"),)): (
        "2 approvals: an ML engineer and a platform admin; evidence: datasets approved; expires after 14 days"
    ),
    ("fine_tune_run.execute", ()): "1 approval: an ML engineer; evidence: datasets approved; expires after 30 days",
    ("model_version.deploy", ()): (
        f"1 approval: a platform admin; evidence: {SCAN}, {BIAS}, {QUANT}; expires after 30 days"
    ),
    ("optimisation_run.execute", ()): (
        "1 approval: an ML engineer; evidence: evaluation set approved; expires after 30 days"
    ),
    ("security_scan.waive", ()): "1 approval: a security reviewer; evidence: none; expires after 30 days",
}


def test_every_rule_of_the_shipped_policies_reads_in_words() -> None:
    said = {
        (policy.action, tuple(sorted(rule.when.items()))): rule_in_words(rule.describe())
        for policy in load_policy_set(settings.POLICY_DIR).policies.values()
        for rule in policy.rules
    }
    assert said == SHIPPED


def _rule(slots: list[tuple[str, int]], evidence: list[Any] | None = None, days: int | None = None) -> dict[str, Any]:
    return {
        "when": {}, "approvals": [{"role": role, "count": count} for role, count in slots],
        "one_slot_per_person": True, "evidence": evidence or [], "expires_after_days": days,
    }  # fmt: skip


def test_the_other_shapes_a_policy_may_take() -> None:
    three = _rule([("data_steward", 2), ("security_reviewer", 1), ("compliance_officer", 1)], days=1)
    assert rule_in_words(three) == (
        "4 approvals: 2 data stewards, a security reviewer and a compliance officer; evidence: none; "
        "expires after 1 day"
    )
    odd = _rule([("ml_engineer", 1)], [{"check": "latency_below", "max_ms": 250}])
    assert rule_in_words(odd) == "1 approval: an ML engineer; evidence: latency below (max ms 250); does not expire"


def test_open_slots_say_which_stay_open() -> None:
    slots = [{"role": "data_steward", "count": 1}, {"role": "compliance_officer", "count": 1}]
    assert open_slots_in_words(slots, {"data_steward": 1}) == "the compliance officer's slot is still open"
    assert open_slots_in_words(slots, {}) == ("the data steward's and the compliance officer's slots are still open")
    two = [{"role": "ml_engineer", "count": 3}]
    assert open_slots_in_words(two, {"ml_engineer": 1}) == "2 more ML engineers' slots are still open"
    assert open_slots_in_words(slots, {"data_steward": 1, "compliance_officer": 1}) == "no slot is open"


def _request(state: str, decided: list[tuple[str, str]]) -> Any:
    """What the decision service returns, as far as the words read it: state, rule, decisions."""
    decisions = [SimpleNamespace(role=role, decision=decision) for role, decision in decided]
    rule = _rule([("data_steward", 1), ("compliance_officer", 1)])
    return SimpleNamespace(state=state, rule=rule, decisions=SimpleNamespace(all=lambda: decisions))


def test_an_outcome_says_what_the_decision_did() -> None:
    assert outcome_in_words(_request("pending", [("data_steward", "approve")])) == (
        "Your approval is recorded; the compliance officer's slot is still open."
    )
    assert outcome_in_words(_request("approved", [("data_steward", "approve"), ("compliance_officer", "approve")])) == (
        "Approved: every slot is filled."
    )
    assert outcome_in_words(_request("rejected", [("data_steward", "reject")])) == "Rejected: the request is closed."
