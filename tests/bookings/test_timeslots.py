from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from bookings.timeslots import is_on_grid, parse_time_input, slot_floor
from tests.factories import local

NOW = local(2026, 3, 2, 10, 10)


def test_slot_floor_rounds_down_to_the_half_hour():
    assert slot_floor(local(2026, 3, 2, 10, 29)) == local(2026, 3, 2, 10, 0)
    assert slot_floor(local(2026, 3, 2, 10, 30)) == local(2026, 3, 2, 10, 30)
    assert slot_floor(local(2026, 3, 2, 10, 59)) == local(2026, 3, 2, 10, 30)


def test_now_means_the_start_of_the_current_slot():
    moment, is_now = parse_time_input("now", field="start", now=NOW)
    assert (moment, is_now) == (local(2026, 3, 2, 10, 0), True)


def test_now_is_refused_as_an_end():
    with pytest.raises(ValidationError, match="can not use the 'now' flag"):
        parse_time_input("now", field="end", base=NOW, now=NOW)


def test_it_reads_the_old_cli_datetime_format_in_local_time():
    moment, _ = parse_time_input("2026 03 05 13 30", field="start", now=NOW)
    assert moment == local(2026, 3, 5, 13, 30)


@pytest.mark.parametrize("minute", ["15", "45", "01"])
def test_it_refuses_minutes_off_the_grid(minute):
    with pytest.raises(ValidationError, match='"mm" must be "00" or "30"'):
        parse_time_input(f"2026 03 05 13 {minute}", field="start", now=NOW)


def test_it_refuses_a_datetime_off_the_grid():
    with pytest.raises(ValidationError, match="Wrong Input!"):
        parse_time_input(local(2026, 3, 5, 13, 31), field="start")


@pytest.mark.parametrize(
    "text, days",
    [("1-day", 1), ("14-day", 14), ("1-week", 7), ("2-week", 14), ("1-week 3-day", 10)],
)
def test_relative_flags_add_up_from_the_base(text, days):
    base = local(2026, 3, 2, 10, 0)
    moment, _ = parse_time_input(text, field="end", base=base)
    assert moment == base + timedelta(days=days)


@pytest.mark.parametrize("text", ["0-day", "15-day", "0-week", "3-week", "-1-day"])
def test_relative_flags_outside_their_range_are_wrong_input(text):
    with pytest.raises(ValidationError, match="Wrong Input!"):
        parse_time_input(text, field="end", base=NOW)


@pytest.mark.parametrize(
    "text", ["", "tomorrow", "2026 02 30 10 00", "2026-03-05 10:00", "2026 03 05 25 00", None, 42]
)
def test_malformed_times_are_wrong_input_not_a_crash(text):
    with pytest.raises(ValidationError, match="Wrong Input!"):
        parse_time_input(text, field="start", base=NOW, now=NOW)


def test_a_naive_datetime_is_read_in_the_portal_time_zone():
    moment, _ = parse_time_input(datetime(2026, 3, 5, 13, 30), field="start")
    assert moment == local(2026, 3, 5, 13, 30)
    assert is_on_grid(moment)
