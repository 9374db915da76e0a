"""The capacity engine: the one place that answers "what is free on this host during
[start, end)" and "what is the earliest window where this request fits". The booking
rules (create, extend, start now), the capacity panel, the suggestion, the timeline, the
legacy importer and the job scheduler all ask here, so a capacity rule changes in one place.

The rules:
- CPUs and memory: at every instant of the window the live reservations (bookings and
  jobs alike) plus the request stay within the host; the peak comes from a sweep over the
  window's boundaries, not a sum.
- GPUs: a GPU is free when no active allocation holds it during any part of the window;
  free GPUs are offered least booked first (booked time within one maximum booking length
  around the window), ties by lowest index.

Two ways in: `availability` / `earliest_fit` read the database for one question, and a
`HostLoad` snapshot answers many questions from memory (and takes tentative `hold`s)."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property

from django.db import connection
from django.db.models import (
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Greatest, Least

from bookings.models import GpuAllocation, Reservation
from bookings.timeslots import MAX_LENGTH, SLOT
from containers.models import Gpu, Host

# Candidate starts are rounded up to this grid; the local booking grid (whole-hour UTC
# offsets) and UTC's agree on half hours and minutes.
_GRID_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

Window = tuple[datetime, datetime]


@dataclass(frozen=True)
class Usage:
    cpus: Decimal
    memory_gb: int


def sweep_peak(
    rows: Iterable[tuple[datetime, datetime, Decimal, int]], *, start: datetime, end: datetime
) -> Usage:
    """The peak of (start, end, cpus, memory_gb) rows within [start, end); rows outside the
    window are skipped, so callers may pass a superset."""
    boundaries = []
    for row_start, row_end, cpus, memory_gb in rows:
        if row_start >= end or row_end <= start:
            continue
        # At one instant an end (0) sorts before a start (1): windows are half-open.
        boundaries.append((max(row_start, start), 1, cpus, memory_gb))
        boundaries.append((min(row_end, end), 0, -cpus, -memory_gb))
    boundaries.sort(key=lambda boundary: boundary[:2])
    cpus_now, memory_now = Decimal(0), 0
    peak_cpus, peak_memory = Decimal(0), 0
    for _, _, cpus, memory_gb in boundaries:
        cpus_now += cpus
        memory_now += memory_gb
        peak_cpus = max(peak_cpus, cpus_now)
        peak_memory = max(peak_memory, memory_now)
    return Usage(cpus=peak_cpus, memory_gb=peak_memory)


def usage_per_slot(
    rows: Iterable[tuple[datetime, datetime, Decimal, int]], *, start: datetime, slots: int
) -> list[Usage]:
    """CPUs and memory held in each of `slots` grid slots from `start` (a reservation holds
    every slot it touches), from a difference array: linear in rows plus slots."""
    cpus_delta = [Decimal(0)] * (slots + 1)
    memory_delta = [0] * (slots + 1)
    for row_start, row_end, cpus, memory_gb in rows:
        first = min(max((row_start - start) // SLOT, 0), slots)
        after_last = min(max(-((start - row_end) // SLOT), 0), slots)
        cpus_delta[first] += cpus
        cpus_delta[after_last] -= cpus
        memory_delta[first] += memory_gb
        memory_delta[after_last] -= memory_gb
    usage, cpus_used, memory_used = [], Decimal(0), 0
    for column in range(slots):
        cpus_used += cpus_delta[column]
        memory_used += memory_delta[column]
        usage.append(Usage(cpus=cpus_used, memory_gb=memory_used))
    return usage


def free_cpus(host: Host, used: Usage) -> Decimal:
    return max(Decimal(host.cpus) - used.cpus, Decimal(0))


def free_memory_gb(host: Host, used: Usage) -> int:
    return max(host.memory_gb - used.memory_gb, 0)


def preference_horizon(start: datetime, end: datetime) -> Window:
    """The stretch whose booked time ranks the free GPUs of [start, end)."""
    return start - MAX_LENGTH, end + MAX_LENGTH


def _by_preference(gpus: Iterable[Gpu], booked: dict[int, timedelta]) -> tuple[Gpu, ...]:
    """Least booked first, ties by lowest index."""
    return tuple(sorted(gpus, key=lambda gpu: (booked.get(gpu.pk) or timedelta(), gpu.index)))


@dataclass(frozen=True)
class OwnBooking:
    """A user's live booking in the way of another booking of theirs."""

    host_name: str
    start: datetime
    end: datetime


class Availability:
    """What is free on `host` for every instant of [start, end). The free GPUs are read
    only when a question needs them, so a request without GPUs costs no GPU query."""

    def __init__(
        self,
        *,
        host: Host,
        start: datetime,
        end: datetime,
        peak: Usage,
        free_gpus: Callable[[], Sequence[Gpu]],
        own_booking: OwnBooking | None = None,
    ) -> None:
        self.host, self.start, self.end, self.peak = host, start, end, peak
        self._read_free_gpus = free_gpus
        # Filled when the question named a user: their live booking overlapping the window.
        self.own_booking = own_booking

    @cached_property
    def free_gpus(self) -> tuple[Gpu, ...]:
        """In preference order."""
        return tuple(self._read_free_gpus())

    @property
    def cpus(self) -> Decimal:
        return free_cpus(self.host, self.peak)

    @property
    def memory_gb(self) -> int:
        return free_memory_gb(self.host, self.peak)

    @property
    def gpus(self) -> int:
        return len(self.free_gpus)

    @property
    def gpus_total(self) -> int:
        return len(self.host.active_gpus)

    def fits_cpus_and_memory(self, *, cpus: Decimal, memory_gb: int) -> bool:
        """Whether the request on top of the peak stays within the host's CPUs and its
        memory (RAM plus swap)."""
        return (
            self.peak.cpus + cpus <= self.host.cpus and self.peak.memory_gb + memory_gb <= self.host.memory_gb
        )

    def fits(self, *, cpus: Decimal, memory_gb: int, gpu_count: int) -> bool:
        return self.fits_cpus_and_memory(cpus=cpus, memory_gb=memory_gb) and (
            gpu_count == 0 or gpu_count <= len(self.free_gpus)
        )

    def pick_gpus(self, count: int) -> list[Gpu]:
        """The `count` most preferred free GPUs; asking for more than are free is a bug in
        the caller, which asks `fits` first."""
        if count == 0:
            return []
        if count > len(self.free_gpus):
            raise ValueError(f"{count} GPUs asked, {len(self.free_gpus)} free")
        return list(self.free_gpus[:count])


@dataclass(frozen=True)
class Fit:
    host: Host
    start: datetime
    end: datetime
    gpus: list[Gpu]


def _live_rows(*, host: Host, start: datetime, end: datetime, exclude_reservation_id: int | None):
    rows = Reservation.objects.live().filter(host=host).overlapping(start, end)
    if exclude_reservation_id is not None:
        rows = rows.exclude(pk=exclude_reservation_id)
    return rows


def availability(
    *,
    host: Host,
    start: datetime,
    end: datetime,
    exclude_reservation_id: int | None = None,
    booking_user_id: int | None = None,
) -> Availability:
    """One query for the live reservations in the window; one more for the GPUs, when asked.
    Given `booking_user_id`, the same read also finds that user's live booking overlapping
    the window on any host (a user holds one booking at a time), as `own_booking`: the
    booking check costs one round trip fewer."""
    on_host, own_booking = [], None
    for row in _window_rows(
        host_id=host.pk, start=start, end=end, user_id=booking_user_id, exclude_id=exclude_reservation_id
    ):
        if row.host_id == host.pk:
            on_host.append((row.start, row.end, row.cpus, row.memory_gb))
        if row.user_id == booking_user_id and row.kind == Reservation.Kind.BOOKING and own_booking is None:
            own_booking = OwnBooking(host_name=row.host_name, start=row.start, end=row.end)
    return Availability(
        host=host,
        start=start,
        end=end,
        peak=sweep_peak(on_host, start=start, end=end),
        free_gpus=lambda: _free_gpus_from_database(
            host=host, start=start, end=end, exclude_reservation_id=exclude_reservation_id
        ),
        own_booking=own_booking,
    )


# The live reservations on a host overlapping a window, and (given a user) that user's live
# bookings overlapping it on any host. Written by hand for the same reason as the GPU read
# below: the ORM's version cost four times the Python of this one on every booking.
_WINDOW_SQL = """
SELECT r.id, r.host_id, r.user_id, r.kind, r.start, r."end", r.cpus, r.memory_gb, h.name AS host_name
FROM bookings_reservation r INNER JOIN containers_host h ON h.id = r.host_id
WHERE r.status IN ({statuses}) AND r.start < %s AND r."end" > %s
  AND (r.host_id = %s OR (r.user_id = %s AND r.kind = %s)) AND r.id <> %s
ORDER BY r.start DESC, r.id DESC
"""


def _window_rows(
    *, host_id: int, start: datetime, end: datetime, user_id: int | None, exclude_id: int | None
) -> list[Reservation]:
    """`Reservation.objects.live().overlapping(start, end)` on the host or of the user's
    bookings, less one reservation; rows carry `host_name`."""
    sql = _WINDOW_SQL.format(statuses=", ".join(["%s"] * len(Reservation.LIVE_STATUSES)))
    adapt = connection.ops.adapt_datetimefield_value
    params = [*Reservation.LIVE_STATUSES, adapt(end), adapt(start), host_id]
    # No user: -1 matches nobody; no reservation left out: 0 is no id.
    params += [user_id if user_id is not None else -1, Reservation.Kind.BOOKING, exclude_id or 0]
    return list(Reservation.objects.raw(sql, params))


def _free_gpus_from_database(
    *, host: Host, start: datetime, end: datetime, exclude_reservation_id: int | None
) -> tuple[Gpu, ...]:
    """One query: the host's GPUs in service, each with whether it is held in the window and
    its booked time in the preference horizon (aggregated in SQL: one row per GPU, whatever
    the history)."""
    horizon_start, horizon_end = preference_horizon(start, end)
    if connection.vendor == "postgresql":
        gpus = list(
            Gpu.objects.raw(
                _FREE_GPUS_SQL,
                {
                    "host": host.pk,
                    "start": start,
                    "end": end,
                    "horizon_start": horizon_start,
                    "horizon_end": horizon_end,
                    "exclude": exclude_reservation_id,
                },
            )
        )
    else:
        gpus = _gpus_with_bookings_orm(
            host=host, start=start, end=end, exclude_reservation_id=exclude_reservation_id
        )
    return _by_preference((gpu for gpu in gpus if not gpu.held), {gpu.pk: gpu.booked for gpu in gpus})


# The query below, written by hand: built with the ORM (OuterRef, Subquery, Least, Greatest)
# it cost about 5 ms of Python per booking to compile on the 2-core lab machine, more than
# everything else a booking does. Per-GPU subqueries, so each walks the (gpu, end, start)
# index over the horizon only: a join over all allocations made the planner scan the whole
# history. `_gpus_with_bookings_orm` is the same question for other databases (SQLite);
# tests/bookings/test_capacity.py checks on PostgreSQL that both answer alike.
_FREE_GPUS_SQL = """
SELECT gpu.*,
  EXISTS (
    SELECT 1 FROM bookings_gpuallocation a
    WHERE a.gpu_id = gpu.id AND a.active AND a.start < %(end)s AND a."end" > %(start)s
      AND a.reservation_id IS DISTINCT FROM %(exclude)s
  ) AS held,
  (
    SELECT SUM(LEAST(a."end", %(horizon_end)s) - GREATEST(a.start, %(horizon_start)s))
    FROM bookings_gpuallocation a
    WHERE a.gpu_id = gpu.id AND a.active
      AND a.start < %(horizon_end)s AND a."end" > %(horizon_start)s
      AND a.reservation_id IS DISTINCT FROM %(exclude)s
  ) AS booked
FROM containers_gpu gpu
WHERE gpu.host_id = %(host)s AND gpu.is_active
ORDER BY gpu.index
"""


def _gpus_with_bookings_orm(
    *, host: Host, start: datetime, end: datetime, exclude_reservation_id: int | None
) -> list[Gpu]:
    horizon_start, horizon_end = preference_horizon(start, end)
    allocations = GpuAllocation.objects.filter(gpu_id=OuterRef("pk"), active=True)
    if exclude_reservation_id is not None:
        allocations = allocations.exclude(reservation_id=exclude_reservation_id)
    booked_in_horizon = ExpressionWrapper(
        Least(F("end"), Value(horizon_end)) - Greatest(F("start"), Value(horizon_start)),
        output_field=DurationField(),
    )
    booked = (
        allocations.filter(start__lt=horizon_end, end__gt=horizon_start)
        .order_by()
        .values("gpu_id")
        .annotate(total=Sum(booked_in_horizon))
        .values("total")
    )
    return list(
        Gpu.objects.filter(host=host, is_active=True)
        .annotate(
            held=Exists(allocations.filter(start__lt=end, end__gt=start)),
            booked=Subquery(booked, output_field=DurationField()),
        )
        .order_by("index")
    )


def gpus_free(*, gpu_ids: Sequence[int], start: datetime, end: datetime, exclude_reservation_id: int) -> bool:
    """Whether these GPUs are held by no other active allocation during [start, end): the
    GPU rule for time added to a reservation that keeps its GPUs."""
    return not (
        GpuAllocation.objects.filter(gpu_id__in=gpu_ids, active=True, start__lt=end, end__gt=start)
        .exclude(reservation_id=exclude_reservation_id)
        .exists()
    )


def ceil_to_grid(moment: datetime, grid: timedelta) -> datetime:
    overshoot = (moment - _GRID_ORIGIN) % grid
    return moment if not overshoot else moment - overshoot + grid


@dataclass(frozen=True, slots=True)
class _Load:
    """One block of capacity: a live reservation, or a tentative hold."""

    start: datetime
    end: datetime
    cpus: Decimal
    memory_gb: int
    reservation_id: int | None


@dataclass(frozen=True, slots=True)
class _Held:
    """One GPU held for [start, end)."""

    gpu_id: int
    start: datetime
    end: datetime
    reservation_id: int | None


@dataclass
class HostLoad:
    """A snapshot of one host's load over a horizon, for many questions at once (the job
    scheduler, the earliest-fit search). Questions must lie within the horizon."""

    host: Host
    start: datetime
    end: datetime
    gpus: list[Gpu]
    loads: list[_Load] = field(default_factory=list)
    held: list[_Held] = field(default_factory=list)

    @classmethod
    def load(cls, host: Host, start: datetime, end: datetime) -> "HostLoad":
        """Reads the live reservations overlapping [start, end) and the active GPU
        allocations overlapping the GPU preference horizon around it."""
        reservations = _live_rows(host=host, start=start, end=end, exclude_reservation_id=None)
        horizon_start, horizon_end = preference_horizon(start, end)
        gpus = host.active_gpus
        allocations = GpuAllocation.objects.filter(
            gpu_id__in=[gpu.pk for gpu in gpus], active=True, start__lt=horizon_end, end__gt=horizon_start
        )
        return cls(
            host=host,
            start=start,
            end=end,
            gpus=gpus,
            loads=[
                _Load(*row) for row in reservations.values_list("start", "end", "cpus", "memory_gb", "pk")
            ],
            held=[_Held(*row) for row in allocations.values_list("gpu_id", "start", "end", "reservation_id")],
        )

    @classmethod
    def load_all(cls, hosts: Sequence[Host], start: datetime, end: datetime) -> dict[int, "HostLoad"]:
        """`load` for many hosts in three queries (their reservations, GPUs and GPU
        allocations) instead of three per host: the booking form labels every host."""
        gpus_of: dict[int, list[Gpu]] = {host.pk: [] for host in hosts}
        for gpu in Gpu.objects.filter(host_id__in=gpus_of, is_active=True).order_by("index"):
            gpus_of[gpu.host_id].append(gpu)
        loads: dict[int, list[_Load]] = {host.pk: [] for host in hosts}
        rows = Reservation.objects.live().filter(host_id__in=loads).overlapping(start, end)
        for host_id, *row in rows.values_list("host_id", "start", "end", "cpus", "memory_gb", "pk"):
            loads[host_id].append(_Load(*row))
        horizon_start, horizon_end = preference_horizon(start, end)
        held: dict[int, list[_Held]] = {host.pk: [] for host in hosts}
        allocations = GpuAllocation.objects.filter(
            gpu__host_id__in=held,
            gpu__is_active=True,
            active=True,
            start__lt=horizon_end,
            end__gt=horizon_start,
        )
        allocations = allocations.values_list("gpu__host_id", "gpu_id", "start", "end", "reservation_id")
        for host_id, *row in allocations:
            held[host_id].append(_Held(*row))
        snapshots = {}
        for host in hosts:
            host.__dict__["active_gpus"] = gpus_of[host.pk]  # the cached property, read here
            gpus, rows = gpus_of[host.pk], loads[host.pk]
            snapshots[host.pk] = cls(
                host=host, start=start, end=end, gpus=gpus, loads=rows, held=held[host.pk]
            )
        return snapshots

    def hold(
        self, start: datetime, end: datetime, cpus: Decimal, memory_gb: int, gpus: Sequence[Gpu]
    ) -> None:
        """Adds a tentative block, as if booked: later questions see it taken."""
        self.loads.append(_Load(start, end, Decimal(cpus), memory_gb, None))
        self.held.extend(_Held(gpu.pk, start, end, None) for gpu in gpus)

    def availability(
        self, start: datetime, end: datetime, *, exclude_reservation_id: int | None = None
    ) -> Availability:
        if start < self.start or end > self.end:
            raise ValueError("the question lies outside the snapshot's horizon")
        loads = (
            (load.start, load.end, load.cpus, load.memory_gb)
            for load in self.loads
            if exclude_reservation_id is None or load.reservation_id != exclude_reservation_id
        )
        held = [
            row
            for row in self.held
            if exclude_reservation_id is None or row.reservation_id != exclude_reservation_id
        ]
        busy = {row.gpu_id for row in held if row.start < end and row.end > start}
        horizon_start, horizon_end = preference_horizon(start, end)
        booked: dict[int, timedelta] = {}
        for row in held:
            overlap = min(row.end, horizon_end) - max(row.start, horizon_start)
            if overlap > timedelta():
                booked[row.gpu_id] = booked.get(row.gpu_id, timedelta()) + overlap
        free = _by_preference((gpu for gpu in self.gpus if gpu.pk not in busy), booked)
        return Availability(
            host=self.host,
            start=start,
            end=end,
            peak=sweep_peak(loads, start=start, end=end),
            free_gpus=lambda: free,
        )

    def earliest_fit(
        self,
        *,
        cpus: Decimal,
        memory_gb: int,
        gpu_count: int,
        duration: timedelta,
        not_before: datetime,
        not_after: datetime,
        grid: timedelta = SLOT,
        avoid: Sequence[Window] = (),
    ) -> Fit | None:
        """The earliest window of `duration` starting in [not_before, not_after] (the latest
        start) that fits and overlaps none of the `avoid` windows (the user's own bookings).
        A window can only open when something ends, so the candidates are `not_before` and
        the ends after it, rounded up to `grid` (SLOT for bookings, MINUTE for jobs)."""
        ends = {load.end for load in self.loads} | {row.end for row in self.held} | {e for _, e in avoid}
        candidates = {not_before} | {ceil_to_grid(moment, grid) for moment in ends if moment > not_before}
        for start in sorted(moment for moment in candidates if moment <= not_after):
            end = start + duration
            if any(avoid_start < end and avoid_end > start for avoid_start, avoid_end in avoid):
                continue
            if self.fits(start, end, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count):
                free = self.availability(start, end)
                return Fit(host=self.host, start=start, end=end, gpus=free.pick_gpus(gpu_count))
        return None

    def fits(self, start: datetime, end: datetime, *, cpus: Decimal, memory_gb: int, gpu_count: int) -> bool:
        """Whether the request fits [start, end): the same rules as `availability(...).fits`,
        without ranking the free GPUs, so trying many windows (the job scheduler, the
        earliest-fit search) costs a sweep and a count each."""
        if start < self.start or end > self.end:
            raise ValueError("the question lies outside the snapshot's horizon")
        loads = ((load.start, load.end, load.cpus, load.memory_gb) for load in self.loads)
        peak = sweep_peak(loads, start=start, end=end)
        if peak.cpus + cpus > self.host.cpus or peak.memory_gb + memory_gb > self.host.memory_gb:
            return False
        if gpu_count == 0:
            return True
        busy = {row.gpu_id for row in self.held if row.start < end and row.end > start}
        return sum(1 for gpu in self.gpus if gpu.pk not in busy) >= gpu_count


def own_bookings_overlapping(
    *, user_id: int, start: datetime, end: datetime, exclude_reservation_id: int | None = None
) -> QuerySet[Reservation]:
    """The user's live bookings overlapping [start, end): a user holds one booking at a
    time, on any host. Jobs do not count: a student may book and run jobs at once."""
    rows = Reservation.objects.live().bookings().filter(user_id=user_id).overlapping(start, end)
    if exclude_reservation_id is not None:
        rows = rows.exclude(pk=exclude_reservation_id)
    return rows


def earliest_fit(
    *,
    hosts: Iterable[Host],
    cpus: Decimal,
    memory_gb: int,
    gpu_count: int,
    duration: timedelta,
    not_before: datetime,
    not_after: datetime,
    grid: timedelta = SLOT,
    user_id: int | None = None,
    loads: Mapping[int, HostLoad] | None = None,
) -> Fit | None:
    """The earliest fitting window over the hosts (ties: the first host given); given
    `user_id`, it also overlaps none of that user's live bookings. `loads`: snapshots by
    host id to answer from (many searches in a row: the waitlist tick), where they cover
    the search; other hosts are read."""
    horizon_end = not_after + duration
    own = own_bookings_overlapping(user_id=user_id, start=not_before, end=horizon_end) if user_id else None
    avoid = list(own.values_list("start", "end")) if own is not None else []
    best: Fit | None = None
    for host in hosts:
        load = (loads or {}).get(host.pk)
        if load is None or load.start > not_before or load.end < horizon_end:
            load = HostLoad.load(host, not_before, horizon_end)
        found = load.earliest_fit(
            cpus=cpus,
            memory_gb=memory_gb,
            gpu_count=gpu_count,
            duration=duration,
            not_before=not_before,
            not_after=not_after,
            grid=grid,
            avoid=avoid,
        )
        if found is not None and (best is None or found.start < best.start):
            best = found
    return best
