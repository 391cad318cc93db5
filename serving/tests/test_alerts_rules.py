"""Monitoring thresholds: each metric against its bound, the minimum counts, and the policy
loader's refusals of bad monitoring documents (file, line and field named), without a database;
then, with one, how an open review is updated and how the admin list acknowledges and resolves."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from governance.policy import PolicyError, parse_policy
from serving.monitoring import window_stats
from serving.monitoring.thresholds import Observation, breaches, observations

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _observation(requests: int = 100, ratings: int = 0, **values: float | None) -> Observation:
    return Observation(T0, T0 + timedelta(hours=1), requests, ratings, values)


@pytest.mark.parametrize(
    ("metric", "fine", "crossing"),
    [
        ("prompt_chars_psi", 0.25, 0.26),
        ("error_rate", 0.05, 0.06),
        ("latency_p95_ms", 2000.0, 2000.5),
        ("guard_hit_rate", 0.2, 0.21),
        ("negative_feedback_share", 0.3, 0.31),
    ],
)
def test_each_metric_crosses_only_above_its_bound(metric: str, fine: float, crossing: float) -> None:
    bounds = {metric: fine, "min_ratings": 1}
    assert breaches(_observation(ratings=10, **{metric: fine}), bounds) == []
    [breach] = breaches(_observation(ratings=10, **{metric: crossing}), bounds)
    assert (breach.metric, breach.observed, breach.threshold, breach.window_start) == (metric, crossing, fine, T0)
    assert breaches(_observation(ratings=10, **{metric: None}), bounds) == []  # no value: nothing judged


def test_minimum_requests_and_ratings() -> None:
    bounds = {"error_rate": 0.1, "negative_feedback_share": 0.3, "min_requests": 20, "min_ratings": 5}
    assert breaches(_observation(requests=19, error_rate=1.0), bounds) == []
    one_bad_rating = _observation(requests=20, ratings=1, negative_feedback_share=1.0)
    assert breaches(one_bad_rating, bounds) == []
    assert [b.metric for b in breaches(_observation(requests=20, ratings=5, negative_feedback_share=0.4), bounds)] == [
        "negative_feedback_share"
    ]


def _record(moment: datetime, chars: int, status: int = 200, latency: float = 5.0) -> dict[str, object]:
    return {"time": moment.isoformat(), "request_id": f"r{moment.timestamp()}-{chars}", "status": status,
            "latency_ms": latency, "prompt_chars": chars, "guard": {}}  # fmt: skip


def test_observations_take_drift_and_negative_share_from_the_real_statistics() -> None:
    baseline = [_record(T0 + timedelta(seconds=i), 10) for i in range(20)]
    shifted = [_record(T0 + timedelta(hours=1, seconds=i), 700, status=500 if i < 2 else 200) for i in range(20)]
    windows = window_stats(baseline + shifted, window_s=3600)
    ratings = [{"time": shifted[i]["time"], "rating": 1 if i < 3 else 5} for i in range(6)]
    first, second = observations(windows, ratings)
    assert first.values["prompt_chars_psi"] == 0.0 and first.ratings == 0
    assert second.values["prompt_chars_psi"] > 5 and second.values["error_rate"] == 0.1
    assert second.ratings == 6 and second.values["negative_feedback_share"] == 0.5
    found = breaches(second, {"prompt_chars_psi": 0.25, "error_rate": 0.05, "min_requests": 20})
    assert [b.metric for b in found] == ["prompt_chars_psi", "error_rate"]


GOOD_RULE = "    thresholds: {prompt_chars_psi: 0.25}\n    on_breach: {review: true}\n"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("    thresholds: {drift: 0.2}\n    on_breach: {review: true}\n",
         "line 4, field rules[0].thresholds: 'drift' is not one of"),
        ("    thresholds: {error_rate: -0.1}\n    on_breach: {review: true}\n",
         "line 4, field rules[0].thresholds.error_rate: -0.1 is less than the minimum of 0"),
        ("    thresholds: {latency_p95_ms: -5}\n    on_breach: {review: true}\n",
         "field rules[0].thresholds.latency_p95_ms: -5 is less than the minimum of 0"),
        ("    thresholds: {guard_hit_rate: 1.5}\n    on_breach: {review: true}\n",
         "field rules[0].thresholds.guard_hit_rate: 1.5 is greater than the maximum of 1"),
        ("    thresholds: {min_requests: 5}\n    on_breach: {review: true}\n",
         "line 4, field rules[0].thresholds: bounds no metric"),
        ("    thresholds: {error_rate: 0.1}\n", "field rules[0]: 'on_breach' is a required property"),
        ("    thresholds: {error_rate: 0.1}\n    on_breach: {review: true, notify: [wizard]}\n",
         "line 5, field rules[0].on_breach.notify[0]: 'wizard' is not one of"),
        ("    thresholds: {error_rate: 0.1}\n    on_breach: {review: true}\n    approvals: []\n",
         "field rules[0]: Additional properties are not allowed ('approvals' was unexpected)"),
    ],
)  # fmt: skip
def test_a_bad_monitoring_document_is_refused_naming_file_line_and_field(rule: str, message: str) -> None:
    text = "action: deployment.monitor\nrules:\n  - when: {environment: production}\n" + rule
    with pytest.raises(PolicyError) as caught:
        parse_policy("deployment.monitor.yaml", text, known_evidence=set(), known_actions={"deployment.deploy"})
    assert str(caught.value).startswith("deployment.monitor.yaml, ") and message in str(caught.value), str(caught.value)


def test_a_monitoring_document_loads_without_an_approval_action() -> None:
    text = "action: deployment.monitor\nrules:\n  - window_minutes: 15\n" + GOOD_RULE.replace("    t", "    t", 1)
    policy = parse_policy("m.yaml", text, known_evidence=set(), known_actions={"deployment.deploy"})
    [rule] = policy.rules
    assert rule.window_s == 900 and rule.thresholds == {"prompt_chars_psi": 0.25}
    assert rule.on_breach == {"review": True, "notify": [], "pause": False} and rule.slots == ()


HOUR = datetime(2026, 12, 1, tzinfo=UTC)


def _watched(ready: dict[str, Any]) -> Any:
    """A requested staging deployment, and a way to record a crossing of its monitoring rule as the
    worker's check does (``_breach_record`` under the shipped staging rule)."""
    from governance.policy import current_policy_set
    from serving.services import deployment_request
    from serving.services.alerts import MONITOR_ACTION, _breach_record

    deployment = deployment_request(
        actor=ready["ml_engineer"], model_version=ready["base"], name="watched", environment="staging",
        target={"max_tokens": 8}, guard={"mode": "off"},
    )  # fmt: skip
    policies = current_policy_set()
    rule = policies.rule_for(MONITOR_ACTION, {"environment": "staging"})
    return deployment, lambda breach: _breach_record(deployment.pk, breach, rule, policies.hash)


@pytest.mark.django_db
def test_an_open_review_is_updated_by_its_latest_window_only(ready: dict[str, Any]) -> None:
    """Each check re-judges every window of the log: earlier windows the open review already
    covers leave it as it is, so a log with two crossing windows does not append an update per
    window per check."""
    from audits.ledger.models import Entry
    from serving.models import DeploymentAlert
    from serving.monitoring.thresholds import Breach

    deployment, record = _watched(ready)
    first, second = (
        Breach("error_rate", observed, 0.1, HOUR + timedelta(hours=n), HOUR + timedelta(hours=n + 1), 40)
        for n, observed in ((0, 0.3), (1, 0.5))
    )

    def check(*found: Breach) -> list[str]:
        before = Entry.objects.count()
        for breach in found:
            record(breach)
        return list(Entry.objects.filter(index__gte=before).values_list("action", flat=True))

    assert check(first) == ["deployment_alert.opened"]
    assert check(first, second) == ["deployment_alert.updated"]  # the new window only
    assert check(first, second) == []  # nothing new: nothing appended, however many windows cross
    alert = DeploymentAlert.objects.get(deployment=deployment)
    assert alert.observed == 0.5 and alert.window_start == second.window_start and len(alert.windows) == 2


@pytest.mark.django_db
def test_the_admin_list_acknowledges_and_resolves_with_the_reason_typed(ready: dict[str, Any]) -> None:
    """A platform admin finishes a review in the admin: the reason typed next to the action goes
    to the service and into the ledger; resolving without one changes nothing and says why."""
    from django.test import Client

    from audits.ledger.models import Entry
    from common.testing import admin_login
    from serving.models import AlertState, DeploymentAlert
    from serving.monitoring.thresholds import Breach

    deployment, record = _watched(ready)
    alert = record(Breach("error_rate", 0.3, 0.1, HOUR, HOUR + timedelta(hours=1), 40))
    client = Client()
    admin_login(client, ready["platform-admin"])

    def act(action: str, reason: str) -> str:
        page = client.post(
            "/admin/serving/deploymentalert/", {"action": action, "_selected_action": [alert.pk], "reason": reason},
            follow=True,
        )  # fmt: skip
        assert page.status_code == 200
        return " ".join(str(m) for m in page.context["messages"])

    def home_panel() -> str:
        page = client.get("/admin/").content.decode()
        found = re.search(r'<section[^>]*id="home-alerts".*?</section>', page, re.S)
        assert found is not None, "the home page shows no monitoring-alerts panel to a platform admin"
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0))).strip()

    panel = home_panel()
    assert panel.startswith("Monitoring alerts to review (1)") and f"{deployment}: error rate 0.3 above 0.1" in panel
    said = act("resolve", "  ")
    assert "Nothing resolved" in said and "Reason" in said
    assert DeploymentAlert.objects.get(pk=alert.pk).state == AlertState.OPEN
    assert f"alert {alert.pk}: acknowledged" in act("acknowledge", "the new client retries on errors")
    assert f"alert {alert.pk}: resolved" in act("resolve", "client fixed its retry loop")
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.resolved_by == ready["platform-admin"]
    assert home_panel() == "Monitoring alerts to review (0) No monitoring alert is open."
    reasons = [
        json.loads(bytes(body))["payload"]["reason"]
        for body in Entry.objects.filter(action__in=["deployment_alert.acknowledged", "deployment_alert.resolved"])
        .order_by("index")
        .values_list("body", flat=True)
    ]
    assert reasons == ["the new client retries on errors", "client fixed its retry loop"]
