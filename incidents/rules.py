"""The Art. 73 clock, pure: how long a provider has to report a serious incident to the market
surveillance authority, counted from when it became aware of it, and where a clock stands.

- Art. 73(2): the general case, at the latest 15 days after becoming aware.
- Art. 73(3): a widespread infringement (Art. 3(61)) or a serious incident under Art. 3(49)(b)
  (serious and irreversible disruption of critical infrastructure): at the latest 2 days.
- Art. 73(4): the death of a person: at the latest 10 days.

An incident that is not serious has no reporting clock. The deadlines are calendar days from the
moment of awareness (the article counts days, not working days); reporting earlier is always
allowed ("immediately after" a causal link is established, Art. 73(2)). An initial, incomplete
report filed in time meets the deadline (Art. 73(5)).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from incidents.models import SeriousKind


@dataclass(frozen=True)
class Clock:
    days: int
    article: str
    why: str


GENERAL = Clock(15, "Art. 73(2)", "a serious incident: at the latest 15 days after becoming aware")

CLOCKS: dict[str, Clock] = {
    SeriousKind.DEATH: Clock(10, "Art. 73(4)", "the death of a person: at the latest 10 days after becoming aware"),
    SeriousKind.HEALTH: GENERAL,
    SeriousKind.CRITICAL_INFRASTRUCTURE: Clock(
        2,
        "Art. 73(3)",
        "a serious and irreversible disruption of critical infrastructure (Art. 3(49)(b)): "
        "at the latest 2 days after becoming aware",
    ),
    SeriousKind.FUNDAMENTAL_RIGHTS: GENERAL,
    SeriousKind.PROPERTY_OR_ENVIRONMENT: GENERAL,
    SeriousKind.WIDESPREAD_INFRINGEMENT: Clock(
        2, "Art. 73(3)", "a widespread infringement (Art. 3(61)): at the latest 2 days after becoming aware"
    ),
}


def clock_of(kind: str) -> Clock:
    """The clock of a serious incident of ``kind`` (a ``SeriousKind`` value)."""
    return CLOCKS[SeriousKind(kind)]


def report_due(aware_at: datetime, *, serious: bool, kind: str) -> datetime | None:
    """When the report is due; ``None`` for an incident that is not serious (no clock)."""
    if not serious:
        return None
    return aware_at + timedelta(days=clock_of(kind).days)


def is_overdue(due: datetime | None, reported_at: datetime | None, now: datetime) -> bool:
    """Whether the deadline passed with no report filed (an initial report counts)."""
    return due is not None and reported_at is None and now > due


def reminder_due(aware_at: datetime, due: datetime | None) -> datetime | None:
    """Half-way through the clock: when the officers are reminded of an unreported incident."""
    return None if due is None else aware_at + (due - aware_at) / 2


def days_left(due: datetime, now: datetime) -> int:
    """Whole days until ``due`` (rounded down); once past, minus the whole days overdue (at least 1)."""
    if now <= due:
        return (due - now) // timedelta(days=1)
    return -max(1, (now - due) // timedelta(days=1))


def describe(due: datetime | None, reported_at: datetime | None, now: datetime) -> str:
    """The clock in words, as the pages and the API show it."""
    due = due.astimezone(UTC) if due is not None else None
    if due is None:
        return "no reporting clock (not serious)" if reported_at is None else "reported"
    if reported_at is not None:
        late = " (late)" if reported_at > due else ""
        return f"reported {reported_at.astimezone(UTC):%Y-%m-%d}{late}; was due {due:%Y-%m-%d %H:%M} UTC"
    left = days_left(due, now)
    if now > due:
        return f"OVERDUE by {-left} day(s): was due {due:%Y-%m-%d %H:%M} UTC"
    return f"due {due:%Y-%m-%d %H:%M} UTC: {left} day(s) left"
