"""Usage reports for staff, as CSV.

A reservation belongs to the report whose date range holds its start (in TIME_ZONE), so
consecutive ranges never count one twice; its figures (bookings/report_figures.py) are
the whole reservation's. On PostgreSQL the reservations CSV is written by the database
itself (bookings/report_copy.py); elsewhere rows come from `.values_list(...).iterator()`
with GPU indices merged in from a second ordered cursor. Either way: no query per row,
memory independent of the number of rows. The usage CSV is summed in the database.
"""

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice

from django.db import connection
from django.db.models import CharField, Count, F, FloatField, Q, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from bookings.models import GpuAllocation, Reservation
from bookings.report_figures import (
    BY_MAINTAINER,
    CANCELLED,
    FINISHED,
    RELEASED_EARLY,
    RELEASED_IDLE,
    UNSUCCESSFUL_STATUSES,
    reservation_figures,
)

CHUNK_SIZE = 5000
ROWS_PER_WRITE = 1000
BOM = "\ufeff"
# Spreadsheets run a cell as a formula when it starts with one of these (after any
# whitespace, which they skip), or with a tab or CR; and a piece of a cell that starts
# with one after a separator, when the text is split into columns (`a;=1+1`).
FORMULA_CHARS = "=+-@"
CELL_STARTS = "\t\r"
SEPARATORS = "\t\r\n;,"
# Python's whitespace (str.isspace; none above U+3000), spelled out: PostgreSQL's \s
# knows only ASCII in a C locale, and the database applies the same rule.
WHITESPACE = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())


def _one_of(chars: str) -> str:
    """A bracket expression that Python's and PostgreSQL's regular expressions read alike."""
    return "[" + "".join(f"\\u{ord(char):04x}" for char in chars) + "]"


# The neutralising rule, once, for both engines (see `neutralise`).
WHOLE_CELL_FORMULA = f"^(?:{_one_of(CELL_STARTS)}|{_one_of(WHITESPACE)}*{_one_of(FORMULA_CHARS)})"
INNER_FORMULA = f"({_one_of(SEPARATORS)}{_one_of(WHITESPACE)}*)(?={_one_of(FORMULA_CHARS)})"
INNER_FORMULA_DEFUSED = "\\1'"
_whole_cell_formula = re.compile(WHOLE_CELL_FORMULA)
_inner_formula = re.compile(INNER_FORMULA)

# Times are ISO 8601 with their offset, in TIME_ZONE ("2026-03-01T10:00:00+08:00").
RESERVATION_COLUMNS = (
    "reservation_id",
    "kind",
    "user",
    "host",
    "start",
    "end",
    "booked_end",
    "charged_from",
    "status",
    "cpus",
    "memory_gb",
    "gpu_count",
    "gpu_indices",
    "image",
    "extra_command",
    "hours_booked",
    "gpu_hours_booked",
    "started_at",
    "ended_at",
    "hours_run",
    "gpu_hours_run",
    "end_reason",
    "hours_given_back",
)
# Per user: hours *booked* (every reservation's window as booked, cancelled ones too),
# *held* (what kept capacity from others: booked minus what was cancelled or released),
# *run* (a container ran; never-run and cancelled reservations add nothing), and
# *busy* GPU hours (telemetry saw the GPUs working). One row per user and kind (booking
# or job); how reservations ended is counted per reason (report_figures.py).
USAGE_COLUMNS = (
    "user",
    "kind",
    "reservations",
    "hours_booked",
    "hours_held",
    "hours_run",
    "gpu_hours_booked",
    "gpu_hours_held",
    "gpu_hours_run",
    "gpu_hours_busy",
    "cpu_hours_held",
    "cpu_hours_run",
    "cancelled",
    "released_early",
    "stopped_by_maintainer",
    "released_idle",
    "finished",
    "blocked_or_failed",
    "hours_given_back",
)


@dataclass(frozen=True)
class ReportRange:
    first: date
    last: date

    @property
    def start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.first, time.min))

    @property
    def end(self) -> datetime:
        """Exclusive: midnight after the last day."""
        return timezone.make_aware(datetime.combine(self.last + timedelta(days=1), time.min))

    def file_name(self, kind: str) -> str:
        return f"aivc-{kind}_{self.first:%Y-%m-%d}_{self.last:%Y-%m-%d}.csv"


def neutralise(cell: str) -> str:
    """A text cell a spreadsheet could run as a formula is defused with apostrophes:
    - the whole cell, when it starts with a tab or CR, or, after leading whitespace,
      with = + - @ (spreadsheets skip the whitespace);
    - each = + - @ that starts a piece after a tab, CR, new line, `;` or `,` (and any
      whitespace), since a spreadsheet importing with another separator or splitting
      the text into columns would read that piece as a cell of its own (`a;=1+1`).
    PostgreSQL applies the same expressions when it writes the CSV (report_copy.py)."""
    if _whole_cell_formula.match(cell):
        cell = f"'{cell}"
    return _inner_formula.sub(INNER_FORMULA_DEFUSED, cell)


class _Neutralised:
    """`neutralise` with its answers remembered: the text cells of an export (user, host,
    image, extra command) repeat from row to row. Bounded like `_LocalTimes`."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self.cache: dict[str, str] = {}

    def __call__(self, cell: str) -> str:
        known = self.cache.get(cell)
        if known is None:
            if len(self.cache) >= self.LIMIT:
                self.cache.clear()
            known = self.cache[cell] = neutralise(cell)
        return known


class _LocalTimes:
    """Reads the database's text of a timestamp into local ISO 8601 with its offset
    ("2026-03-01T10:00:00+08:00", seconds cut like PostgreSQL's to_char). Parsing
    text in C and remembering the answers (bookings sit on a 30-minute grid, so times
    repeat) is several times faster than loading datetimes row by row; the memory is
    bounded by emptying the cache when it is full."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self.tz = timezone.get_current_timezone()
        self.cache: dict[str, str] = {}

    def __call__(self, text: str | None) -> str:
        if text is None:
            return ""
        known = self.cache.get(text)
        if known is None:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:  # SQLite keeps UTC without an offset
                moment = moment.replace(tzinfo=UTC)
            if len(self.cache) >= self.LIMIT:
                self.cache.clear()
            known = self.cache[text] = moment.astimezone(self.tz).isoformat(timespec="seconds")
        return known


_TIME_FIELDS = ("start", "end", "booked_end", "charged_from", "started_at", "ended_at")


def _as_text(queryset):
    """The timestamps as the database's text (see `_LocalTimes`)."""
    return queryset.annotate(**{f"{name}_text": Cast(name, CharField()) for name in _TIME_FIELDS})


def reservations_in_range(report_range: ReportRange):
    return Reservation.objects.filter(start__gte=report_range.start, start__lt=report_range.end)


def _gpu_indices_by_reservation(report_range: ReportRange) -> Iterator[tuple[int, str]]:
    """(reservation id, "0 1") in the same order as `reservation_rows` reads reservations."""
    allocations = (
        GpuAllocation.objects.filter(
            reservation__start__gte=report_range.start, reservation__start__lt=report_range.end
        )
        .order_by("reservation__start", "reservation_id", "gpu__index")
        .values_list("reservation_id", "gpu__index")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    current, indices = None, []
    for reservation_id, index in allocations:
        if reservation_id != current:
            if current is not None:
                yield current, " ".join(indices)
            current, indices = reservation_id, []
        indices.append(str(index))
    if current is not None:
        yield current, " ".join(indices)


def reservation_rows(*, report_range: ReportRange, now: datetime) -> Iterator[list]:
    """One row per reservation starting in the range, ordered by start."""
    local = _LocalTimes()
    neutral = _Neutralised()
    rows = (
        _as_text(reservations_in_range(report_range))
        .annotate(**reservation_figures(now=now))
        .order_by("start", "pk")
        .values_list(
            "pk",
            *(f"{name}_text" for name in _TIME_FIELDS),
            "kind",
            "status",
            "cpus",
            "memory_gb",
            "gpu_count",
            "user__username",
            "host__name",
            "image__reference",
            "extra_command",
            "hours_booked",
            "hours_run",
            "hours_given_back",
            "end_reason",
        )
        .iterator(chunk_size=CHUNK_SIZE)
    )
    gpu_indices = _gpu_indices_by_reservation(report_range)
    next_gpus = next(gpu_indices, None)
    for (
        pk,
        start_text,
        end_text,
        booked_end_text,
        charged_from_text,
        started_text,
        ended_text,
        kind,
        status,
        cpus,
        memory_gb,
        gpu_count,
        username,
        host_name,
        image,
        extra_command,
        hours_booked,
        hours_run,
        hours_given_back,
        end_reason,
    ) in rows:
        indices = ""
        if next_gpus is not None and next_gpus[0] == pk:
            indices = next_gpus[1]
            next_gpus = next(gpu_indices, None)
        yield [
            pk,
            kind,
            neutral(username),
            neutral(host_name),
            local(start_text),
            local(end_text),
            local(booked_end_text),
            local(charged_from_text),
            status,
            cpus,
            memory_gb,
            gpu_count,
            indices,
            neutral(image or ""),
            neutral(extra_command),
            f"{hours_booked:.2f}",
            f"{hours_booked * gpu_count:.2f}",
            local(started_text),
            local(ended_text),
            f"{hours_run:.2f}",
            f"{hours_run * gpu_count:.2f}",
            end_reason,
            f"{hours_given_back:.2f}",
        ]


def usage_rows(
    *, report_range: ReportRange, now: datetime, gpu_hours_busy: Mapping[tuple[int, str], float] | None = None
) -> Iterator[list]:
    """One row per user and kind (booking, job) with a reservation starting in the range, by
    user name then kind, summed by the database. `gpu_hours_busy` ((user id, kind) ->
    hours) comes from GPU telemetry, which the caller reads."""
    gpu_hours_busy = gpu_hours_busy or {}
    held = F("hours_booked") - F("hours_given_back")
    cpus = Cast("cpus", FloatField())
    totals = (
        reservations_in_range(report_range)
        .annotate(**reservation_figures(now=now))
        .values("user_id", "user__username", "kind")
        .annotate(
            reservations=Count("pk"),
            booked=Sum("hours_booked"),
            held=Sum(held),
            run=Sum("hours_run"),
            gpu_booked=Sum(F("hours_booked") * F("gpu_count")),
            gpu_held=Sum(held * F("gpu_count")),
            gpu_run=Sum(F("hours_run") * F("gpu_count")),
            cpu_held=Sum(held * cpus),
            cpu_run=Sum(F("hours_run") * cpus),
            cancelled=Count("pk", filter=Q(end_reason=CANCELLED)),
            released_early=Count("pk", filter=Q(end_reason=RELEASED_EARLY)),
            stopped_by_maintainer=Count("pk", filter=Q(end_reason__in=BY_MAINTAINER)),
            released_idle=Count("pk", filter=Q(end_reason=RELEASED_IDLE)),
            finished=Count("pk", filter=Q(end_reason=FINISHED)),
            blocked_or_failed=Count("pk", filter=Q(status__in=UNSUCCESSFUL_STATUSES)),
            given_back=Sum("hours_given_back"),
        )
        .order_by("user__username", "kind")
    )
    for user in totals:
        yield [
            neutralise(user["user__username"]),
            user["kind"],
            user["reservations"],
            f"{user['booked']:.2f}",
            f"{user['held']:.2f}",
            f"{user['run']:.2f}",
            f"{user['gpu_booked']:.2f}",
            f"{user['gpu_held']:.2f}",
            f"{user['gpu_run']:.2f}",
            f"{gpu_hours_busy.get((user['user_id'], user['kind']), 0.0):.2f}",
            f"{user['cpu_held']:.2f}",
            f"{user['cpu_run']:.2f}",
            user["cancelled"],
            user["released_early"],
            user["stopped_by_maintainer"],
            user["released_idle"],
            user["finished"],
            user["blocked_or_failed"],
            f"{user['given_back']:.2f}",
        ]


class _Buffer:
    """A write-only file for csv.writer whose text is taken out in pieces."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def take(self) -> bytes:
        text, self.parts = "".join(self.parts), []
        return text.encode("utf-8")


def csv_bytes(
    header: Iterable[str], rows: Iterable[list], *, bom: bool = False, rows_per_write: int = ROWS_PER_WRITE
) -> Iterator[bytes]:
    """UTF-8 CSV in pieces of `rows_per_write` rows; with `bom` a byte-order mark first, so
    Excel reads the text as UTF-8."""
    buffer = _Buffer()
    writer = csv.writer(buffer)
    if bom:
        buffer.write(BOM)
    writer.writerow(header)
    rows = iter(rows)
    while batch := list(islice(rows, rows_per_write)):
        writer.writerows(batch)
        yield buffer.take()
    if buffer.parts:
        yield buffer.take()


def reservations_csv_bytes(*, report_range: ReportRange, now: datetime, bom: bool = False) -> Iterator[bytes]:
    """The reservations CSV in pieces; PostgreSQL writes it itself, byte for byte the same."""
    if connection.vendor == "postgresql":
        from bookings.report_copy import copied_reservations_csv

        return copied_reservations_csv(report_range=report_range, now=now, bom=bom)
    return csv_bytes(RESERVATION_COLUMNS, reservation_rows(report_range=report_range, now=now), bom=bom)
