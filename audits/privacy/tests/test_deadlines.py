"""Deadlines of data-subject requests, against dates checked by hand on a calendar.

Every expected date is written out; the weekday noted beside it is the reason it was chosen.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from audits.privacy.deadlines import (
    Deadline,
    add_business_days,
    add_months,
    ccpa_deadlines,
    gdpr_deadlines,
    roll_to_working_day,
    status,
    us_federal_holidays,
)

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def at_noon_utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, 0, tzinfo=UTC)


def end_of_day(year: int, month: int, day: int, tz: ZoneInfo | type[UTC] = UTC) -> datetime:
    return datetime(year, month, day, 23, 59, 59, 999999, tzinfo=tz)


# add_months: Regulation 1182/71 Art. 3(2)(c), no roll-forward


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2025, 3, 14), 1, date(2025, 4, 14)),
        (date(2025, 1, 31), 1, date(2025, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2025, 3, 31), 1, date(2025, 4, 30)),
        (date(2025, 11, 30), 3, date(2026, 2, 28)),  # across the year
        (date(2025, 12, 31), 2, date(2026, 2, 28)),
        (date(2025, 1, 31), 0, date(2025, 1, 31)),
    ],
)
def test_add_months_same_date_or_month_end(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_roll_to_working_day() -> None:
    assert roll_to_working_day(date(2026, 2, 27)) == date(2026, 2, 27)  # Friday
    assert roll_to_working_day(date(2026, 2, 28)) == date(2026, 3, 2)  # Saturday -> Monday
    assert roll_to_working_day(date(2025, 12, 25), {date(2025, 12, 25), date(2025, 12, 26)}) == date(2025, 12, 29)


# GDPR Art. 12(3)


def test_gdpr_one_month_from_31_january_ends_28_february() -> None:
    deadlines = gdpr_deadlines(at_noon_utc(2025, 1, 31))

    assert deadlines.received_on == date(2025, 1, 31)
    assert deadlines.respond_by == Deadline(day=date(2025, 2, 28), ends_at=end_of_day(2025, 2, 28))  # Friday
    assert deadlines.extension_notice_by == deadlines.respond_by
    assert deadlines.confirm_by is None
    assert deadlines.extended is False


def test_gdpr_one_month_from_31_january_in_a_leap_year_ends_29_february() -> None:
    assert gdpr_deadlines(at_noon_utc(2024, 1, 31)).respond_by.day == date(2024, 2, 29)  # Thursday


def test_gdpr_month_end_on_a_saturday_rolls_forward_to_monday() -> None:
    # 28 February 2026 is a Saturday.
    deadlines = gdpr_deadlines(at_noon_utc(2026, 1, 31))

    assert deadlines.respond_by.day == date(2026, 3, 2)
    assert deadlines.respond_by.ends_at == end_of_day(2026, 3, 2)


def test_gdpr_corresponding_date_convention_does_not_roll_forward() -> None:
    deadlines = gdpr_deadlines(at_noon_utc(2026, 1, 31), convention="corresponding_date")

    assert deadlines.respond_by.day == date(2026, 2, 28)  # Saturday, kept
    assert deadlines.extension_notice_by == deadlines.respond_by
    assert deadlines.extend().respond_by.day == date(2026, 4, 30)  # Thursday


def test_gdpr_receipt_on_30_november() -> None:
    # Received on a Sunday: counting starts anyway; 30 December 2025 is a Tuesday.
    deadlines = gdpr_deadlines(at_noon_utc(2025, 11, 30))

    assert deadlines.respond_by.day == date(2025, 12, 30)


def test_gdpr_extension_gives_three_months_from_receipt_and_keeps_the_notice_deadline() -> None:
    # 30 November 2025 + 3 months: no 30 February, so 28 February 2026, a Saturday -> Monday 2 March.
    deadlines = gdpr_deadlines(at_noon_utc(2025, 11, 30), extended=True)

    assert deadlines.extended is True
    assert deadlines.respond_by.day == date(2026, 3, 2)
    assert deadlines.extension_notice_by is not None
    assert deadlines.extension_notice_by.day == date(2025, 12, 30)


def test_gdpr_extend_from_31_january_gives_30_april() -> None:
    extended = gdpr_deadlines(at_noon_utc(2025, 1, 31)).extend()

    assert extended.respond_by.day == date(2025, 4, 30)  # Wednesday
    assert extended.extension_notice_by is not None
    assert extended.extension_notice_by.day == date(2025, 2, 28)


def test_gdpr_public_holidays_passed_in_are_skipped() -> None:
    # 25 December 2025 is a Thursday; with 25 and 26 December as holidays and the weekend after,
    # the period ends on Monday 29 December.
    holidays = {date(2025, 12, 25), date(2025, 12, 26)}

    assert gdpr_deadlines(at_noon_utc(2025, 11, 25)).respond_by.day == date(2025, 12, 25)
    assert gdpr_deadlines(at_noon_utc(2025, 11, 25), holidays=holidays).respond_by.day == date(2025, 12, 29)


def test_gdpr_receipt_date_is_taken_in_the_given_time_zone() -> None:
    # 20:00 on 31 December 2024 in Los Angeles (UTC-8) is 04:00 on 1 January 2025 in UTC.
    received_at = datetime(2024, 12, 31, 20, 0, tzinfo=LOS_ANGELES)

    in_utc = gdpr_deadlines(received_at)
    assert in_utc.received_on == date(2025, 1, 1)
    assert in_utc.respond_by.day == date(2025, 2, 3)  # 1 February 2025 is a Saturday -> Monday

    in_los_angeles = gdpr_deadlines(received_at, tz="America/Los_Angeles")
    assert in_los_angeles.received_on == date(2024, 12, 31)
    assert in_los_angeles.respond_by.day == date(2025, 1, 31)  # Friday
    assert in_los_angeles.respond_by.ends_at == end_of_day(2025, 1, 31, LOS_ANGELES)
    assert in_los_angeles.respond_by.ends_at.astimezone(UTC) == datetime(2025, 2, 1, 7, 59, 59, 999999, tzinfo=UTC)


# CCPA regulations §7021, §7026(f), §7027(g)


def test_ccpa_confirmation_ten_business_days_across_weekends() -> None:
    # Received Wednesday 4 March 2026: 5, 6, 9-13, 16, 17, 18 March.
    deadlines = ccpa_deadlines(at_noon_utc(2026, 3, 4), kind="delete")

    assert deadlines.confirm_by == Deadline(day=date(2026, 3, 18), ends_at=end_of_day(2026, 3, 18))


def test_ccpa_confirmation_of_a_request_received_on_a_saturday() -> None:
    # Saturday 7 March 2026: counting starts Monday 9 March; the tenth business day is Friday 20.
    deadlines = ccpa_deadlines(at_noon_utc(2026, 3, 7), kind="know")

    assert deadlines.confirm_by is not None
    assert deadlines.confirm_by.day == date(2026, 3, 20)


def test_ccpa_confirmation_skips_thanksgiving() -> None:
    # Received Friday 20 November 2026; Thanksgiving is Thursday 26 November: 23, 24, 25, 27, 30
    # November, 1-4 and 7 December.
    deadlines = ccpa_deadlines(at_noon_utc(2026, 11, 20), kind="correct")

    assert deadlines.confirm_by is not None
    assert deadlines.confirm_by.day == date(2026, 12, 7)


def test_ccpa_california_holidays_can_replace_the_federal_ones() -> None:
    # The day after Thanksgiving is a California state holiday, not a federal one.
    california_2026 = {date(2026, 11, 26), date(2026, 11, 27), date(2026, 12, 25)}
    deadlines = ccpa_deadlines(at_noon_utc(2026, 11, 20), kind="correct", holidays=california_2026)

    assert deadlines.confirm_by is not None
    assert deadlines.confirm_by.day == date(2026, 12, 8)


def test_ccpa_weekends_only_when_no_holidays_are_given() -> None:
    deadlines = ccpa_deadlines(at_noon_utc(2026, 11, 20), kind="correct", holidays=())

    assert deadlines.confirm_by is not None
    assert deadlines.confirm_by.day == date(2026, 12, 4)


def test_ccpa_confirmation_across_christmas_and_new_year() -> None:
    # Received Friday 18 December 2026; Christmas (Friday 25) and New Year's Day 2027 (Friday 1
    # January) are skipped: 21-24, 28-31 December, 4 and 5 January 2027.
    deadlines = ccpa_deadlines(at_noon_utc(2026, 12, 18), kind="know")

    assert deadlines.confirm_by is not None
    assert deadlines.confirm_by.day == date(2027, 1, 5)


def test_ccpa_confirmation_across_observed_christmas_and_new_year() -> None:
    # Christmas 2027 and New Year's Day 2028 are Saturdays, observed Fridays 24 and 31 December
    # 2027. Received Monday 20 December 2027: 21-23, 27-30 December, 3-5 January 2028.
    deadlines = ccpa_deadlines(at_noon_utc(2027, 12, 20), kind="know")

    assert deadlines.confirm_by is not None
    assert deadlines.confirm_by.day == date(2028, 1, 5)


def test_ccpa_response_45_calendar_days_and_90_when_extended() -> None:
    received_at = at_noon_utc(2026, 3, 2)

    deadlines = ccpa_deadlines(received_at, kind="know")
    assert deadlines.respond_by.day == date(2026, 4, 16)
    assert deadlines.extension_notice_by == deadlines.respond_by

    extended = deadlines.extend()
    assert extended.extended is True
    assert extended.respond_by.day == date(2026, 5, 31)  # a Sunday: calendar days do not roll forward
    assert extended.extension_notice_by is not None
    assert extended.extension_notice_by.day == date(2026, 4, 16)
    assert extended.confirm_by == deadlines.confirm_by
    assert ccpa_deadlines(received_at, kind="know", extended=True) == extended


def test_ccpa_opt_out_15_business_days_across_memorial_day() -> None:
    # Received Wednesday 13 May 2026; Memorial Day is Monday 25 May: 14, 15, 18-22, 26-29 May,
    # 1-4 June.
    deadlines = ccpa_deadlines(at_noon_utc(2026, 5, 13), kind="opt_out")

    assert deadlines.respond_by.day == date(2026, 6, 4)
    assert deadlines.confirm_by is None
    assert deadlines.extension_notice_by is None


def test_ccpa_limit_15_business_days() -> None:
    assert ccpa_deadlines(at_noon_utc(2026, 5, 13), kind="limit_sensitive").respond_by.day == date(2026, 6, 4)


def test_ccpa_receipt_date_is_taken_in_the_given_time_zone() -> None:
    # 20:00 on Friday 6 March 2026 in Los Angeles is Saturday 7 March in UTC.
    received_at = datetime(2026, 3, 6, 20, 0, tzinfo=LOS_ANGELES)

    in_los_angeles = ccpa_deadlines(received_at, kind="know", tz="America/Los_Angeles")
    assert in_los_angeles.received_on == date(2026, 3, 6)
    assert in_los_angeles.respond_by.day == date(2026, 4, 20)
    assert in_los_angeles.respond_by.ends_at == end_of_day(2026, 4, 20, LOS_ANGELES)

    assert ccpa_deadlines(received_at, kind="know").respond_by.day == date(2026, 4, 21)


# add_business_days


def test_add_business_days() -> None:
    assert add_business_days(date(2026, 3, 6), 0) == date(2026, 3, 6)
    assert add_business_days(date(2026, 3, 6), 1) == date(2026, 3, 9)  # Friday -> Monday
    assert add_business_days(date(2026, 3, 6), 1, {date(2026, 3, 9)}) == date(2026, 3, 10)


# US federal holidays


def test_us_federal_holidays_2026() -> None:
    assert us_federal_holidays(2026) == {
        date(2026, 1, 1),
        date(2026, 1, 19),
        date(2026, 2, 16),
        date(2026, 5, 25),
        date(2026, 6, 19),
        date(2026, 7, 3),  # 4 July is a Saturday
        date(2026, 9, 7),
        date(2026, 10, 12),
        date(2026, 11, 11),
        date(2026, 11, 26),
        date(2026, 12, 25),
    }


def test_us_federal_holidays_2027_include_new_year_2028_observed() -> None:
    assert us_federal_holidays(2027) == {
        date(2027, 1, 1),
        date(2027, 1, 18),
        date(2027, 2, 15),
        date(2027, 5, 31),
        date(2027, 6, 18),  # 19 June is a Saturday
        date(2027, 7, 5),  # 4 July is a Sunday
        date(2027, 9, 6),
        date(2027, 10, 11),
        date(2027, 11, 11),
        date(2027, 11, 25),
        date(2027, 12, 24),  # Christmas is a Saturday
        date(2027, 12, 31),  # New Year's Day 2028 is a Saturday
    }


def test_us_federal_holidays_2028_lose_new_years_day_to_2027() -> None:
    holidays_2028 = us_federal_holidays(2028)

    assert date(2028, 1, 1) not in holidays_2028
    assert date(2027, 12, 31) not in holidays_2028
    assert len(holidays_2028) == 10


def test_juneteenth_sunday_is_observed_monday_and_absent_before_2021() -> None:
    assert date(2022, 6, 20) in us_federal_holidays(2022)
    assert date(2021, 6, 18) in us_federal_holidays(2021)
    assert not {d for d in us_federal_holidays(2020) if d.month == 6}


# status


DEADLINE = end_of_day(2026, 3, 2)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (DEADLINE - timedelta(days=7, microseconds=1), "on_time"),
        (DEADLINE - timedelta(days=7), "due_soon"),
        (DEADLINE, "due_soon"),
        (DEADLINE + timedelta(microseconds=1), "overdue"),
    ],
)
def test_status_thresholds(now: datetime, expected: str) -> None:
    assert status(DEADLINE, now) == expected


def test_status_with_a_custom_window_and_a_deadline_object() -> None:
    deadline = gdpr_deadlines(at_noon_utc(2026, 1, 31)).respond_by  # ends 2 March 2026

    assert status(deadline, at_noon_utc(2026, 3, 1), soon=timedelta(hours=12)) == "on_time"
    assert status(deadline, at_noon_utc(2026, 3, 2), soon=timedelta(hours=12)) == "due_soon"
    assert status(deadline, at_noon_utc(2026, 3, 3)) == "overdue"


def test_status_compares_instants_across_time_zones() -> None:
    # The end of 31 January 2025 in Los Angeles is 07:59:59.999999 on 1 February in UTC.
    deadline = end_of_day(2025, 1, 31, LOS_ANGELES)

    assert status(deadline, datetime(2025, 2, 1, 7, 0, tzinfo=UTC)) == "due_soon"
    assert status(deadline, datetime(2025, 2, 1, 8, 0, tzinfo=UTC)) == "overdue"


# errors


def test_naive_received_at_is_refused() -> None:
    with pytest.raises(ValueError, match="received_at must be a timezone-aware datetime"):
        gdpr_deadlines(datetime(2026, 1, 31, 12, 0))
    with pytest.raises(ValueError, match="received_at must be a timezone-aware datetime"):
        ccpa_deadlines(datetime(2026, 1, 31, 12, 0), kind="know")


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        status(DEADLINE, datetime(2026, 3, 1, 12, 0))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CCPA request kind 'portability'"):
        ccpa_deadlines(at_noon_utc(2026, 3, 2), kind="portability")


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "../etc/passwd", "America"])
def test_unknown_time_zone_is_refused(tz: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        gdpr_deadlines(at_noon_utc(2026, 3, 2), tz=tz)
    with pytest.raises(ValueError, match="unknown time zone"):
        ccpa_deadlines(at_noon_utc(2026, 3, 2), kind="know", tz=tz)


def test_unknown_gdpr_convention_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown GDPR convention 'ico'"):
        gdpr_deadlines(at_noon_utc(2026, 3, 2), convention="ico")


def test_second_extension_is_refused() -> None:
    with pytest.raises(ValueError, match="already extended; only one extension is allowed"):
        gdpr_deadlines(at_noon_utc(2026, 3, 2), extended=True).extend()
    with pytest.raises(ValueError, match="already extended; only one extension is allowed"):
        ccpa_deadlines(at_noon_utc(2026, 3, 2), kind="delete").extend().extend()


def test_opt_out_cannot_be_extended() -> None:
    with pytest.raises(ValueError, match="opt_out request cannot be extended"):
        ccpa_deadlines(at_noon_utc(2026, 3, 2), kind="opt_out", extended=True)
    with pytest.raises(ValueError, match="limit_sensitive request cannot be extended"):
        ccpa_deadlines(at_noon_utc(2026, 3, 2), kind="limit_sensitive").extend()


def test_negative_counts_and_datetimes_as_dates_are_refused() -> None:
    with pytest.raises(ValueError, match="zero or more"):
        add_business_days(date(2026, 3, 2), -1)
    with pytest.raises(ValueError, match="zero or more"):
        add_months(date(2026, 3, 2), -1)
    with pytest.raises(TypeError, match="each holiday must be a date"):
        add_business_days(date(2026, 3, 2), 1, {at_noon_utc(2026, 3, 3)})
    with pytest.raises(ValueError, match="soon must not be negative"):
        status(DEADLINE, DEADLINE, soon=timedelta(days=-1))
