"""The Art. 73 clock for every kind of serious incident (pure rules, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from incidents import rules
from incidents.models import SeriousKind

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

AWARE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

EXPECTED = {
    SeriousKind.DEATH: (10, "Art. 73(4)"),
    SeriousKind.HEALTH: (15, "Art. 73(2)"),
    SeriousKind.CRITICAL_INFRASTRUCTURE: (2, "Art. 73(3)"),
    SeriousKind.FUNDAMENTAL_RIGHTS: (15, "Art. 73(2)"),
    SeriousKind.PROPERTY_OR_ENVIRONMENT: (15, "Art. 73(2)"),
    SeriousKind.WIDESPREAD_INFRINGEMENT: (2, "Art. 73(3)"),
}


def test_every_kind_has_its_clock() -> None:
    assert set(EXPECTED) == set(SeriousKind)


@pytest.mark.parametrize("kind", list(SeriousKind))
def test_the_clock_of_each_kind(kind: SeriousKind) -> None:
    days, article = EXPECTED[kind]
    clock = rules.clock_of(kind)
    assert (clock.days, clock.article) == (days, article)
    due = rules.report_due(AWARE, serious=True, kind=kind)
    assert due == AWARE + timedelta(days=days)
    assert rules.reminder_due(AWARE, due) == AWARE + timedelta(days=days) / 2
    just_before, just_after = due - timedelta(seconds=1), due + timedelta(seconds=1)
    assert not rules.is_overdue(due, None, just_before) and not rules.is_overdue(due, None, due)
    assert rules.is_overdue(due, None, just_after)
    assert not rules.is_overdue(due, just_before, just_after + timedelta(days=30))  # reported in time
    assert rules.describe(due, None, just_after).startswith("OVERDUE by 1 day(s)")
    assert rules.describe(due, None, AWARE) == f"due {due:%Y-%m-%d %H:%M} UTC: {days} day(s) left"


def test_not_serious_has_no_clock() -> None:
    assert rules.report_due(AWARE, serious=False, kind="") is None
    assert not rules.is_overdue(None, None, AWARE + timedelta(days=400))
    assert rules.reminder_due(AWARE, None) is None
    assert rules.describe(None, None, AWARE) == "no reporting clock (not serious)"


def test_days_left_and_lateness() -> None:
    due = AWARE + timedelta(days=15)
    assert rules.days_left(due, AWARE + timedelta(days=16)) == -1
    assert rules.days_left(due, AWARE + timedelta(days=14, hours=12)) == 0
    assert rules.days_left(due, AWARE + timedelta(days=15, hours=1)) == -1
    assert rules.days_left(due, AWARE + timedelta(days=17, hours=23)) == -2
    late = rules.describe(due, AWARE + timedelta(days=16), AWARE + timedelta(days=20))
    assert late == f"reported {AWARE + timedelta(days=16):%Y-%m-%d} (late); was due {due:%Y-%m-%d %H:%M} UTC"
