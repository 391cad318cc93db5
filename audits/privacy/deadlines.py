"""Statutory deadlines of data-subject requests under the GDPR and the CCPA.

Pure module, no Django and no clock: every function takes the moments it needs, so a caller (a
service, a report, a test) decides what "now" is.

GDPR, Art. 12(3) of Regulation (EU) 2016/679
    The controller acts on a request "without undue delay and in any event within one month of
    receipt". The period "may be extended by two further months where necessary", and the data
    subject must be told of any extension, with the reasons, "within one month of receipt". The
    one-month end is therefore both the response deadline and the extension-notice deadline; an
    extended response is due three months from receipt (not two months from the rolled-forward end
    of the first month, which could be a few days later).

    "One month" is counted as Regulation (EEC, Euratom) No 1182/71 (rules on periods, dates and
    time limits) counts it, which the CJEU applies to Union acts (C-171/03 Toeters and Verberk):

    - Art. 3(1): the day of the event (receipt) is not part of the period;
    - Art. 3(2)(c): a period in months ends at the expiry of the day in the last month that has the
      same date as the day from which it runs (the day of receipt: 14 March -> 14 April); when that
      date does not exist in the last month, at the expiry of that month's last day (31 January ->
      28 February, or 29 February in a leap year);
    - Art. 3(3), 3(4): the period includes weekends and public holidays, but when its last day is a
      public holiday, a Saturday or a Sunday it ends at the expiry of the next working day.

    Public holidays are those of the place where the controller acts (Art. 2 of 1182/71), so they
    are passed in; the default is none (weekends only). This is ``convention="eu_1182_71"``, the
    default. Supervisory authorities word it differently: the UK ICO's guidance counts to "the
    corresponding calendar date" in the next month (since August 2019 counting from the day of
    receipt; before, from the day after), the last day of a shorter month, and the next working day
    after a weekend or bank holiday: the same dates as 1182/71 given UK bank holidays. Some
    authorities and advisers suggest a flat 28 days instead. ``convention="corresponding_date"`` is
    the stricter reading for an internal policy: the same date (or month end) with no roll-forward
    past weekends or holidays, so it is never later than the default.

CCPA regulations, Cal. Code Regs. tit. 11
    - §7021(a): confirm receipt of a request to know, delete or correct within 10 business days;
    - §7021(b): respond within 45 calendar days of receipt (the period begins on the day of
      receipt, whatever verification takes); when necessary, once, up to 45 further calendar days
      (90 in all from receipt), with notice and reasons to the consumer within the first 45 days;
    - §7026(f): act on a request to opt out of sale or sharing no later than 15 business days from
      receipt; §7027(g): the same for a request to limit the use of sensitive personal
      information. Neither has a confirmation step or an extension.

    Calendar days are counted from the day after receipt (Cal. Civ. Code §10 excludes the first
    day): receipt on 1 March gives 15 April. The end date is not rolled forward past a weekend or a
    holiday (the stricter choice; Civ. Code §§11-12 might allow it). Business days are Monday to
    Friday less holidays; the nth business day after the day of receipt is the deadline. The default
    holidays are the US federal ones (:func:`us_federal_holidays`), a choice rather than a rule of
    the regulations: California state holidays differ (the day after Thanksgiving, Cesar Chavez
    Day, ...) and can be passed in instead.

Time zones
    A request is received at an aware datetime; its date in the time zone ``tz`` (an IANA name,
    default "UTC") is the day of receipt, and a deadline is the end of its day in that zone
    (23:59:59.999999) as an aware datetime, alongside the date itself. Use the zone of the office
    that must act, not the requester's.

None of this is legal advice: a period may also restart (the GDPR's month runs from receipt of
information needed to identify the requester or clarify the request), which is for the caller to
decide by choosing ``received_at``.
"""

from __future__ import annotations

import calendar
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CCPA_KINDS",
    "GDPR_CONVENTIONS",
    "STATUSES",
    "Deadline",
    "Deadlines",
    "add_business_days",
    "add_months",
    "ccpa_deadlines",
    "describe",
    "gdpr_deadlines",
    "is_working_day",
    "roll_to_working_day",
    "status",
    "us_federal_holidays",
    "worst_status",
]

GDPR_CONVENTIONS = ("eu_1182_71", "corresponding_date")
CCPA_KINDS = ("know", "delete", "correct", "opt_out", "limit_sensitive")
# §7021(a) confirmation and §7021(b) response with its one extension apply to these kinds; the
# others (§7026(f) opt-out, §7027(g) limit_sensitive) are a flat 15 business days.
_CCPA_CONFIRMED_KINDS = frozenset({"know", "delete", "correct"})
_CCPA_CONFIRM_BUSINESS_DAYS = 10
_CCPA_RESPONSE_DAYS = 45
_CCPA_ACT_BUSINESS_DAYS = 15
_GDPR_MONTHS = 1
_GDPR_EXTENDED_MONTHS = 3

_ONE_DAY = timedelta(days=1)
Status = Literal["on_time", "due_soon", "overdue"]
STATUSES: tuple[Status, ...] = ("on_time", "due_soon", "overdue")  # from the least urgent to the most


@dataclass(frozen=True, slots=True)
class Deadline:
    """A deadline: the last local ``day`` to act, and ``ends_at``, that day's last instant in its zone."""

    day: date
    ends_at: datetime


@dataclass(frozen=True)
class Deadlines:
    """The deadlines of one request.

    ``respond_by`` is the response deadline (extended when ``extended``); ``confirm_by`` is the
    CCPA's confirmation of receipt (None for the GDPR, opt_out and limit_sensitive);
    ``extension_notice_by`` is the last day to tell the requester of an extension (None where none
    is allowed). It stays set once extended, so a late notice can still be checked.
    """

    regime: Literal["gdpr", "ccpa"]
    kind: str | None
    received_at: datetime
    received_on: date
    tz: str
    extended: bool
    respond_by: Deadline
    confirm_by: Deadline | None
    extension_notice_by: Deadline | None
    holidays: frozenset[date] = field(repr=False)
    convention: str | None = None

    def extend(self) -> Deadlines:
        """The same request's deadlines with the one extension the law allows.

        Raises ``ValueError`` when already extended or when the kind allows no extension. Whether
        the notice went out by ``extension_notice_by`` is for the caller to check.
        """
        if self.extended:
            raise ValueError(f"this {self.regime.upper()} request is already extended; only one extension is allowed")
        if self.regime == "gdpr":
            return gdpr_deadlines(
                self.received_at,
                tz=self.tz,
                holidays=self.holidays,
                extended=True,
                convention=self.convention or "eu_1182_71",
            )
        return ccpa_deadlines(self.received_at, kind=self.kind or "", tz=self.tz, holidays=self.holidays, extended=True)


def add_months(start: date, months: int) -> date:
    """The day ``months`` months after ``start`` with the same date, or that month's last day.

    Art. 3(2)(c) of Regulation 1182/71 without the weekend roll-forward of Art. 3(4) (see
    :func:`roll_to_working_day`): 31 January + 1 gives 28 February (29 in a leap year).
    """
    _require_date("start", start)
    if months < 0:
        raise ValueError(f"months must be zero or more, got {months}")
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def is_working_day(day: date, holidays: Collection[date] = ()) -> bool:
    """Whether ``day`` is Monday to Friday and not one of ``holidays``."""
    return day.weekday() < 5 and day not in holidays


def roll_to_working_day(day: date, holidays: Collection[date] = ()) -> date:
    """``day`` itself when a working day, else the next working day (Art. 3(4) of 1182/71)."""
    _require_date("day", day)
    while not is_working_day(day, holidays):
        day += _ONE_DAY
    return day


def add_business_days(start: date, n: int, holidays: Collection[date] = ()) -> date:
    """The ``n``-th business day after ``start`` (``start`` itself never counts; 0 gives ``start``).

    Business days are Monday to Friday less ``holidays``; a request received on a Saturday starts
    counting on Monday.
    """
    _require_date("start", start)
    if n < 0:
        raise ValueError(f"the number of business days must be zero or more, got {n}")
    holidays = _holiday_set(holidays)
    day = start
    while n:
        day += _ONE_DAY
        if is_working_day(day, holidays):
            n -= 1
    return day


def us_federal_holidays(year: int) -> set[date]:
    """The US federal holidays observed on days of ``year`` (5 U.S.C. §6103 as in force since 2021).

    New Year's Day, Birthday of Martin Luther King Jr. (third Monday of January), Washington's
    Birthday (third Monday of February), Memorial Day (last Monday of May), Juneteenth (19 June,
    from 2021), Independence Day, Labor Day (first Monday of September), Columbus Day (second Monday
    of October), Veterans Day (11 November), Thanksgiving (fourth Thursday of November) and
    Christmas. A holiday on a Saturday is observed the Friday before, one on a Sunday the Monday
    after (5 U.S.C. §6103(b); Executive Order 11582). Every date returned falls in ``year``: when
    New Year's Day is a Saturday it is observed on 31 December of the year before, so that date
    belongs to the earlier year's set. Inauguration Day (Washington area only) and one-off
    closures by executive order are not included.
    """
    if not 1 <= year < 9999:
        raise ValueError(f"year must be between 1 and 9998, got {year}")
    observed = {_observed(d) for d in _federal_holidays_by_rule(year)}
    observed.add(_observed(date(year + 1, 1, 1)))
    return {d for d in observed if d.year == year}


def gdpr_deadlines(
    received_at: datetime,
    *,
    tz: str = "UTC",
    holidays: Collection[date] = (),
    extended: bool = False,
    convention: str = "eu_1182_71",
) -> Deadlines:
    """The GDPR Art. 12(3) deadlines of a data-subject request received at ``received_at``.

    One month from the day of receipt in ``tz`` (three when ``extended``), counted under
    ``convention`` (see the module docstring): ``"eu_1182_71"`` (default) rolls a last day that is
    a weekend or one of ``holidays`` forward to the next working day; ``"corresponding_date"``
    never does. ``extension_notice_by`` is the one-month end in both cases.

    Raises ``ValueError`` for a naive ``received_at``, an unknown ``tz`` or ``convention``.
    """
    if convention not in GDPR_CONVENTIONS:
        raise ValueError(f"unknown GDPR convention {convention!r}; expected one of {', '.join(GDPR_CONVENTIONS)}")
    zone = _zone(tz)
    received_on = _received_on(received_at, zone)
    holiday_set = _holiday_set(holidays)

    def period_end(months: int) -> date:
        end = add_months(received_on, months)
        return roll_to_working_day(end, holiday_set) if convention == "eu_1182_71" else end

    first_month = _deadline(period_end(_GDPR_MONTHS), zone)
    respond_by = _deadline(period_end(_GDPR_EXTENDED_MONTHS), zone) if extended else first_month
    return Deadlines(
        regime="gdpr",
        kind=None,
        received_at=received_at,
        received_on=received_on,
        tz=tz,
        extended=extended,
        respond_by=respond_by,
        confirm_by=None,
        extension_notice_by=first_month,
        holidays=holiday_set,
        convention=convention,
    )


def ccpa_deadlines(
    received_at: datetime,
    *,
    kind: str,
    tz: str = "UTC",
    holidays: Collection[date] | None = None,
    extended: bool = False,
) -> Deadlines:
    """The CCPA regulations' deadlines of a consumer request received at ``received_at``.

    ``kind`` is one of ``CCPA_KINDS``. For "know", "delete" and "correct": ``confirm_by`` 10
    business days after the day of receipt, ``respond_by`` 45 calendar days after it (90 when
    ``extended``), ``extension_notice_by`` the 45th day. For "opt_out" and "limit_sensitive":
    ``respond_by`` 15 business days after receipt, nothing else. ``holidays`` defaults to the US
    federal holidays of the year of receipt and the next; pass an empty collection for weekends only.

    Raises ``ValueError`` for a naive ``received_at``, an unknown ``kind`` or ``tz``, and for
    ``extended`` on a kind that allows no extension.
    """
    if kind not in CCPA_KINDS:
        raise ValueError(f"unknown CCPA request kind {kind!r}; expected one of {', '.join(CCPA_KINDS)}")
    zone = _zone(tz)
    received_on = _received_on(received_at, zone)
    if holidays is None:
        holiday_set = frozenset(us_federal_holidays(received_on.year) | us_federal_holidays(received_on.year + 1))
    else:
        holiday_set = _holiday_set(holidays)

    if kind not in _CCPA_CONFIRMED_KINDS:
        if extended:
            raise ValueError(f"a CCPA {kind} request cannot be extended (15 business days, no extension)")
        respond_by = _deadline(add_business_days(received_on, _CCPA_ACT_BUSINESS_DAYS, holiday_set), zone)
        confirm_by = extension_notice_by = None
    else:
        confirm_by = _deadline(add_business_days(received_on, _CCPA_CONFIRM_BUSINESS_DAYS, holiday_set), zone)
        extension_notice_by = _deadline(received_on + timedelta(days=_CCPA_RESPONSE_DAYS), zone)
        days = 2 * _CCPA_RESPONSE_DAYS if extended else _CCPA_RESPONSE_DAYS
        respond_by = _deadline(received_on + timedelta(days=days), zone)
    return Deadlines(
        regime="ccpa",
        kind=kind,
        received_at=received_at,
        received_on=received_on,
        tz=tz,
        extended=extended,
        respond_by=respond_by,
        confirm_by=confirm_by,
        extension_notice_by=extension_notice_by,
        holidays=holiday_set,
    )


def status(deadline: datetime | Deadline, now: datetime, *, soon: timedelta = timedelta(days=7)) -> Status:
    """Where ``now`` stands: "overdue" past ``deadline``, "due_soon" within ``soon`` of it, else "on_time".

    The deadline's own last instant is still "due_soon"; exactly ``soon`` before it too.
    """
    deadline_at = deadline.ends_at if isinstance(deadline, Deadline) else deadline
    _require_aware("deadline", deadline_at)
    _require_aware("now", now)
    if soon < timedelta(0):
        raise ValueError(f"soon must not be negative, got {soon}")
    if now > deadline_at:
        return "overdue"
    if deadline_at - now <= soon:
        return "due_soon"
    return "on_time"


def worst_status(
    deadlines: Iterable[datetime | Deadline], now: datetime, *, soon: timedelta = timedelta(days=7)
) -> Status:
    """The most urgent :func:`status` of ``deadlines`` at ``now`` (the order of ``STATUSES``).

    A request owes several answers at once (a CCPA response, and a confirmation of receipt until
    it is given): its flag is the worst of them. Raises ``ValueError`` for no deadline at all.
    """
    statuses = [status(deadline, now, soon=soon) for deadline in deadlines]
    if not statuses:
        raise ValueError("worst_status needs at least one deadline")
    return max(statuses, key=STATUSES.index)


def describe(deadline_at: datetime, tz: str, now: datetime, *, answered_at: datetime | None = None) -> str:
    """A deadline as its officer reads it, in the request's zone ``tz``, counted in that zone's
    days: "due 12 Jan 2027, 23:59 Europe/Berlin — 4 days left", "due today", "3 days overdue";
    once answered (``answered_at``), whether the answer came in time ("answered 2 days early",
    "answered on the last day", "answered 1 day late")."""
    zone = _zone(tz)
    _require_aware("deadline_at", deadline_at)
    _require_aware("now", now)
    local = deadline_at.astimezone(zone)
    due = f"due {local.day} {local:%b %Y, %H:%M} {tz}"
    if answered_at is not None:
        _require_aware("answered_at", answered_at)
        left = (local.date() - answered_at.astimezone(zone).date()).days
        if answered_at > deadline_at:
            return f"{due} — answered {_days(max(1, -left))} late"
        return f"{due} — answered {_days(left)} early" if left else f"{due} — answered on the last day"
    left = (local.date() - now.astimezone(zone).date()).days
    if now > deadline_at:
        return f"{due} — {_days(max(1, -left))} overdue"
    return f"{due} — {_days(left)} left" if left else f"{due} — due today"


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _federal_holidays_by_rule(year: int) -> list[date]:
    days = [
        date(year, 1, 1),
        _nth_weekday(year, 1, calendar.MONDAY, 3),
        _nth_weekday(year, 2, calendar.MONDAY, 3),
        _nth_weekday(year, 5, calendar.MONDAY, -1),
        date(year, 7, 4),
        _nth_weekday(year, 9, calendar.MONDAY, 1),
        _nth_weekday(year, 10, calendar.MONDAY, 2),
        date(year, 11, 11),
        _nth_weekday(year, 11, calendar.THURSDAY, 4),
        date(year, 12, 25),
    ]
    if year >= 2021:  # Juneteenth National Independence Day Act, 17 June 2021
        days.append(date(year, 6, 19))
    return days


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The ``n``-th ``weekday`` of the month, counting from 1; ``n == -1`` is the last one."""
    if n == -1:
        last = date(year, month, calendar.monthrange(year, month)[1])
        return last - timedelta(days=(last.weekday() - weekday) % 7)
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _observed(day: date) -> date:
    if day.weekday() == calendar.SATURDAY:
        return day - _ONE_DAY
    if day.weekday() == calendar.SUNDAY:
        return day + _ONE_DAY
    return day


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        # OSError: a key naming a folder of the tz database ("America"); TypeError: not a string.
        raise ValueError(f"unknown time zone {tz!r}; expected an IANA name such as 'Europe/Paris'") from None


def _received_on(received_at: datetime, zone: ZoneInfo) -> date:
    _require_aware("received_at", received_at)
    return received_at.astimezone(zone).date()


def _deadline(day: date, zone: ZoneInfo) -> Deadline:
    return Deadline(day=day, ends_at=datetime.combine(day, time.max, tzinfo=zone))


def _require_aware(name: str, value: datetime) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value.isoformat()}")


def _require_date(name: str, value: date) -> None:
    # A datetime is a date too, but it never equals a date, so it would slip past every holiday.
    if not isinstance(value, date) or isinstance(value, datetime):
        raise TypeError(f"{name} must be a date (not a datetime), got {type(value).__name__}")


def _holiday_set(holidays: Collection[date]) -> frozenset[date]:
    holiday_set = frozenset(holidays)
    for day in holiday_set:
        _require_date("each holiday", day)
    return holiday_set
