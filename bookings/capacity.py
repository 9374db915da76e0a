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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum, Value
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
    ) -> None:
        self.host, self.start, self.end, self.peak = host, start, end, peak
        self._read_free_gpus = free_gpus

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
    *, host: Host, start: datetime, end: datetime, exclude_reservation_id: int | None = None
) -> Availability:
    """One query for the live reservations in the window; one more for the GPUs, when asked."""
    rows = _live_rows(host=host, start=start, end=end, exclude_reservation_id=exclude_reservation_id)
    peak = sweep_peak(rows.values_list("start", "end", "cpus", "memory_gb"), start=start, end=end)
    return Availability(
        host=host,
        start=start,
        end=end,
        peak=peak,
        free_gpus=lambda: _free_gpus_from_database(
            host=host, start=start, end=end, exclude_reservation_id=exclude_reservation_id
        ),
    )


def _free_gpus_from_database(
    *, host: Host, start: datetime, end: datetime, exclude_reservation_id: int | None
) -> tuple[Gpu, ...]:
    """One query: the host's GPUs in service with their allocations aggregated in SQL (one
    row per GPU, whatever the history)."""
    horizon_start, horizon_end = preference_horizon(start, end)
    allocation = Q(allocations__active=True)
    if exclude_reservation_id is not None:
        allocation &= ~Q(allocations__reservation_id=exclude_reservation_id)
    in_horizon = allocation & Q(allocations__start__lt=horizon_end, allocations__end__gt=horizon_start)
    booked_in_horizon = ExpressionWrapper(
        Least(F("allocations__end"), Value(horizon_end))
        - Greatest(F("allocations__start"), Value(horizon_start)),
        output_field=DurationField(),
    )
    in_window = allocation & Q(allocations__start__lt=end, allocations__end__gt=start)
    gpus = (
        Gpu.objects.filter(host=host, is_active=True)
        .annotate(
            held=Count("allocations", filter=in_window), booked=Sum(booked_in_horizon, filter=in_horizon)
        )
        .order_by("index")
    )
    gpus = list(gpus)
    return _by_preference((gpu for gpu in gpus if not gpu.held), {gpu.pk: gpu.booked for gpu in gpus})


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
) -> Fit | None:
    """The earliest fitting window over the hosts (ties: the first host given); given
    `user_id`, it also overlaps none of that user's live bookings."""
    horizon_end = not_after + duration
    own = own_bookings_overlapping(user_id=user_id, start=not_before, end=horizon_end) if user_id else None
    avoid = list(own.values_list("start", "end")) if own is not None else []
    best: Fit | None = None
    for host in hosts:
        found = HostLoad.load(host, not_before, horizon_end).earliest_fit(
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
