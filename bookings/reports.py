"""Usage reports for staff, as CSV rows produced lazily.

A reservation belongs to the report whose date range holds its start (in TIME_ZONE), so
consecutive ranges never count one twice; its figures are the whole reservation's.
Rows come from `.values_list(...).iterator()` with GPU indices merged in from a second
ordered cursor: no query per row, memory independent of the number of rows.
"""

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice

from django.db.models import CharField
from django.db.models.functions import Cast
from django.utils import timezone

from bookings.models import GpuAllocation, Reservation

CHUNK_SIZE = 5000
ROWS_PER_WRITE = 1000
BOM = "\ufeff"
# Spreadsheets run a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A formula start after a separator a spreadsheet may split on (see neutralise).
INNER_FORMULA_START = re.compile(r"([\t\r\n;,]\s*)(?=[=+\-@])")
HOUR = 3600.0
RUNNING_STATUSES = (Reservation.Status.STARTING, Reservation.Status.RUNNING)
UNSUCCESSFUL_STATUSES = (Reservation.Status.BLOCKED, Reservation.Status.FAILED)

RESERVATION_COLUMNS = (
    "reservation_id",
    "user",
    "host",
    "start",
    "end",
    "booked_end",
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
    "cancelled_or_released",
    "hours_given_back",
)
# Per user: hours *booked* (every reservation's window as booked, cancelled ones too),
# *held* (what kept capacity from others: booked minus what was cancelled or released),
# *run* (a container ran; never-run and cancelled reservations add nothing), and
# *busy* GPU hours (telemetry saw the GPUs working).
USAGE_COLUMNS = (
    "user",
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


@dataclass(frozen=True)
class Figures:
    hours_booked: float
    hours_run: float
    hours_given_back: float
    given_back_by: str


def neutralise(cell: str) -> str:
    """A text cell a spreadsheet could run as a formula is defused with apostrophes:
    - the whole cell, when it starts with a tab or CR, or, after leading whitespace,
      with = + - @ (spreadsheets skip the whitespace);
    - each = + - @ that starts a piece after a tab, CR, new line, `;` or `,` (and any
      whitespace), since a spreadsheet importing with another separator or splitting
      the text into columns would read that piece as a cell of its own (`a;=1+1`)."""
    if cell.startswith(FORMULA_STARTS) or cell.lstrip().startswith(FORMULA_STARTS):
        cell = f"'{cell}"
    return INNER_FORMULA_START.sub(r"\1'", cell)


def figures(
    *,
    start: float,
    end: float,
    booked_end: float | None,
    status: str,
    started_at: float | None,
    ended_at: float | None,
    cancelled_at: float | None,
    released_at: float | None,
    now: float,
) -> Figures:
    """Hours booked (start to the end as booked or extended), hours run (started_at to
    ended_at, or to now while it runs), hours given back (all of a cancelled booking; from
    the release to the booked end of one released early). Times are epoch seconds."""
    booked_end = booked_end or end
    hours_booked = (booked_end - start) / HOUR
    run_end = ended_at or (min(now, end) if status in RUNNING_STATUSES else None)
    hours_run = max((run_end - started_at) / HOUR, 0.0) if started_at and run_end else 0.0
    if status == Reservation.Status.CANCELLED or cancelled_at is not None:
        return Figures(hours_booked, hours_run, hours_booked, "cancelled")
    if released_at is not None:
        given_back = max((booked_end - max(released_at, start)) / HOUR, 0.0)
        return Figures(hours_booked, hours_run, given_back, "released early")
    return Figures(hours_booked, hours_run, 0.0, "")


class _Moments:
    """Reads the database's text of a timestamp into (epoch seconds, local "YYYY-MM-DD
    HH:MM"). Parsing text in C and remembering the answers (bookings sit on a 30-minute
    grid, so times repeat) is several times faster than loading datetimes row by row; the
    memory is bounded by emptying the cache when it is full."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self.tz = timezone.get_current_timezone()
        self.cache: dict[str, tuple[float, str]] = {}

    def __call__(self, text: str | None) -> tuple[float | None, str]:
        if text is None:
            return None, ""
        known = self.cache.get(text)
        if known is None:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:  # SQLite keeps UTC without an offset
                moment = moment.replace(tzinfo=UTC)
            if len(self.cache) >= self.LIMIT:
                self.cache.clear()
            known = self.cache[text] = (moment.timestamp(), f"{moment.astimezone(self.tz):%Y-%m-%d %H:%M}")
        return known


_TIME_FIELDS = ("start", "end", "booked_end", "started_at", "ended_at", "cancelled_at", "released_at")


def _as_text(queryset):
    """The timestamps as the database's text (see `_Moments`)."""
    return queryset.annotate(**{f"{name}_text": Cast(name, CharField()) for name in _TIME_FIELDS})


def _in_range(report_range: ReportRange):
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
    moment = _Moments()
    now_seconds = now.timestamp()
    rows = (
        _as_text(_in_range(report_range))
        .order_by("start", "pk")
        .values_list(
            "pk",
            *(f"{name}_text" for name in _TIME_FIELDS),
            "status",
            "cpus",
            "memory_gb",
            "gpu_count",
            "user__username",
            "host__name",
            "image__reference",
            "extra_command",
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
        started_text,
        ended_text,
        cancelled_text,
        released_text,
        status,
        cpus,
        memory_gb,
        gpu_count,
        username,
        host_name,
        image,
        extra_command,
    ) in rows:
        indices = ""
        if next_gpus is not None and next_gpus[0] == pk:
            indices = next_gpus[1]
            next_gpus = next(gpu_indices, None)
        start, start_local = moment(start_text)
        end, end_local = moment(end_text)
        booked_end, booked_end_local = moment(booked_end_text)
        started_at, started_local = moment(started_text)
        ended_at, ended_local = moment(ended_text)
        result = figures(
            start=start,
            end=end,
            booked_end=booked_end,
            status=status,
            started_at=started_at,
            ended_at=ended_at,
            cancelled_at=moment(cancelled_text)[0],
            released_at=moment(released_text)[0],
            now=now_seconds,
        )
        yield [
            pk,
            neutralise(username),
            neutralise(host_name),
            start_local,
            end_local,
            booked_end_local,
            status,
            cpus,
            memory_gb,
            gpu_count,
            indices,
            neutralise(image or ""),
            neutralise(extra_command),
            f"{result.hours_booked:.2f}",
            f"{result.hours_booked * gpu_count:.2f}",
            started_local,
            ended_local,
            f"{result.hours_run:.2f}",
            f"{result.hours_run * gpu_count:.2f}",
            result.given_back_by,
            f"{result.hours_given_back:.2f}",
        ]


@dataclass
class _UserTotals:
    reservations: int = 0
    hours_booked: float = 0.0
    hours_held: float = 0.0
    hours_run: float = 0.0
    gpu_hours_booked: float = 0.0
    gpu_hours_held: float = 0.0
    gpu_hours_run: float = 0.0
    cpu_hours_held: float = 0.0
    cpu_hours_run: float = 0.0
    blocked_or_failed: int = 0
    cancelled: int = 0
    released_early: int = 0
    hours_given_back: float = 0.0


def usage_rows(
    *, report_range: ReportRange, now: datetime, gpu_hours_busy: Mapping[int, float] | None = None
) -> Iterator[list]:
    """One row per user with a reservation starting in the range, by user name. Memory
    grows with the number of users, never with the number of reservations.
    `gpu_hours_busy` (user id -> hours) comes from GPU telemetry, which the caller reads."""
    gpu_hours_busy = gpu_hours_busy or {}
    totals: dict[int, _UserTotals] = {}
    names: dict[int, str] = {}
    moment = _Moments()
    now_seconds = now.timestamp()
    rows = (
        _as_text(_in_range(report_range))
        .values_list(
            "user_id",
            *(f"{name}_text" for name in _TIME_FIELDS),
            "status",
            "cpus",
            "gpu_count",
            "user__username",
        )
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for (
        user_id,
        start_text,
        end_text,
        booked_end_text,
        started_text,
        ended_text,
        cancelled_text,
        released_text,
        status,
        cpus,
        gpu_count,
        username,
    ) in rows:
        result = figures(
            start=moment(start_text)[0],
            end=moment(end_text)[0],
            booked_end=moment(booked_end_text)[0],
            status=status,
            started_at=moment(started_text)[0],
            ended_at=moment(ended_text)[0],
            cancelled_at=moment(cancelled_text)[0],
            released_at=moment(released_text)[0],
            now=now_seconds,
        )
        user = totals.get(user_id)
        if user is None:
            user = totals[user_id] = _UserTotals()
            names[user_id] = username
        cpus = float(cpus)
        held = result.hours_booked - result.hours_given_back
        user.reservations += 1
        user.hours_booked += result.hours_booked
        user.hours_held += held
        user.hours_run += result.hours_run
        user.gpu_hours_booked += result.hours_booked * gpu_count
        user.gpu_hours_held += held * gpu_count
        user.gpu_hours_run += result.hours_run * gpu_count
        user.cpu_hours_held += held * cpus
        user.cpu_hours_run += result.hours_run * cpus
        user.blocked_or_failed += status in UNSUCCESSFUL_STATUSES
        user.cancelled += result.given_back_by == "cancelled"
        user.released_early += result.given_back_by == "released early"
        user.hours_given_back += result.hours_given_back
    for user_id in sorted(totals, key=names.__getitem__):
        user = totals[user_id]
        yield [
            neutralise(names[user_id]),
            user.reservations,
            f"{user.hours_booked:.2f}",
            f"{user.hours_held:.2f}",
            f"{user.hours_run:.2f}",
            f"{user.gpu_hours_booked:.2f}",
            f"{user.gpu_hours_held:.2f}",
            f"{user.gpu_hours_run:.2f}",
            f"{gpu_hours_busy.get(user_id, 0.0):.2f}",
            f"{user.cpu_hours_held:.2f}",
            f"{user.cpu_hours_run:.2f}",
            user.cancelled,
            user.released_early,
            user.blocked_or_failed,
            f"{user.hours_given_back:.2f}",
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
