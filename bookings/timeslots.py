"""The 30-minute booking grid and the one parser of time input."""

import re
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

SLOT = timedelta(minutes=30)
MAX_AHEAD = timedelta(days=14)
MAX_LENGTH = timedelta(days=14)
NOW_FLAG = "now"

_FLAG = re.compile(r"^(\d{1,3})-(day|week)s?$")
# Far enough to book and to report on; far from the ends of datetime, where adding two
# weeks would overflow.
YEARS = range(1970, 9000)
_FLAG_LIMITS = {"day": (1, 14), "week": (1, 2)}
_DATETIME = re.compile(r"^(\d{4})\s+(\d{1,2})\s+(\d{1,2})\s+(\d{1,2})\s+(\d{1,2})$")


def wrong_input(detail: str, field: str | None = None) -> ValidationError:
    message = f"Wrong Input! {detail}"
    return ValidationError({field: message} if field else message, code="wrong_input")


def slot_floor(moment: datetime) -> datetime:
    """The start of the 30-minute slot holding `moment`, on the local grid."""
    local = timezone.localtime(moment)
    floored = local.replace(minute=local.minute - local.minute % 30, second=0, microsecond=0)
    return floored.astimezone(moment.tzinfo)


def needed_from(*, start: datetime, is_now: bool, now: datetime) -> datetime:
    """When a booking first needs the server. A `now` booking is shown from the start of the
    slot but needs the server only from this moment, so a reservation released earlier in
    the slot is no obstacle."""
    return now if is_now else start


def is_on_grid(moment: datetime) -> bool:
    local = timezone.localtime(moment)
    return local.minute in (0, 30) and local.second == 0 and local.microsecond == 0


def parse_time_input(
    value: object, *, field: str, base: datetime | None = None, now: datetime | None = None
) -> tuple[datetime, bool]:
    """Reads a start or end: a datetime, `now` (start only), `YYYY MM DD hh mm`, or flags
    like `3-day` or `1-week 2-day` that add up from `base`. Returns the aware time on the
    grid and whether it was `now`."""
    if isinstance(value, datetime):
        if value.year not in YEARS:
            raise wrong_input(f"The {field} time is not a date the portal books.", field)
        moment = value if timezone.is_aware(value) else timezone.make_aware(value)
        return _on_grid(moment, field), False
    if not isinstance(value, str) or not value.strip():
        raise wrong_input(f"Enter the {field} time as 'YYYY MM DD hh mm', 'now' or 'N-day'.", field)
    text = value.strip().lower()
    if text == NOW_FLAG:
        if field != "start":
            raise wrong_input("The end time can not use the 'now' flag.", field)
        if now is None:
            raise wrong_input("'now' needs the current time.", field)
        return slot_floor(now), True
    match = _DATETIME.match(text)
    if match:
        year, month, day, hour, minute = (int(part) for part in match.groups())
        try:
            if year not in YEARS:
                raise ValueError("year out of range")
            naive = datetime(year, month, day, hour, minute)
        except ValueError as error:
            raise wrong_input(f"{field} is not a real date or time ({error}).", field) from None
        if minute not in (0, 30):
            raise wrong_input('"mm" must be "00" or "30".', field)
        return timezone.make_aware(naive), False
    return _add_flags(text, field=field, base=base), False


def _add_flags(text: str, *, field: str, base: datetime | None) -> datetime:
    total = timedelta()
    for flag in text.split():
        match = _FLAG.match(flag)
        if not match:
            raise wrong_input(f"'{flag}' is neither 'YYYY MM DD hh mm', 'now', 'N-day' nor 'N-week'.", field)
        count, unit = int(match.group(1)), match.group(2)
        low, high = _FLAG_LIMITS[unit]
        if not low <= count <= high:
            raise wrong_input(f"'{flag}': N-{unit} takes N from {low} to {high}.", field)
        total += timedelta(days=count * (7 if unit == "week" else 1))
    if base is None:
        raise wrong_input(f"A relative {field} needs a start time.", field)
    try:
        return base + total
    except OverflowError:
        raise wrong_input(f"The {field} time is not a date the portal books.", field) from None


def _on_grid(moment: datetime, field: str) -> datetime:
    if not is_on_grid(moment):
        raise wrong_input(f'The {field} time must be on the half hour ("mm" 00 or 30).', field)
    return moment
