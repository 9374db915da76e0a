from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Greatest, Least

from accounts.models import User
from accounts.selectors import Capability, capability_for
from bookings.models import GpuAllocation, Reservation
from bookings.timeslots import MAX_AHEAD, MAX_LENGTH, SLOT, slot_floor
from containers.models import ContainerEvent, Gpu, Host, SpaceAudit


@dataclass(frozen=True)
class Usage:
    cpus: Decimal
    memory_gb: int


def peak_usage(
    *, host: Host, start: datetime, end: datetime, exclude_reservation_id: int | None = None
) -> Usage:
    """The most CPUs and the most memory that live reservations on `host` hold at any one
    instant of [start, end): a sweep over the window's boundaries, not a sum."""
    rows = Reservation.objects.live().filter(host=host).overlapping(start, end)
    if exclude_reservation_id is not None:
        rows = rows.exclude(pk=exclude_reservation_id)
    return sweep_peak(rows.values_list("start", "end", "cpus", "memory_gb"), start=start, end=end)


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


def gpus_by_preference(
    *, host: Host, start: datetime, end: datetime, exclude_reservation_id: int | None = None
) -> list[Gpu]:
    """The host's active GPUs that no active allocation holds during [start, end), least
    booked first (booked time within one maximum booking length around the window), ties
    by lowest index. The database aggregates: one row per GPU, whatever the history."""
    horizon_start, horizon_end = start - MAX_LENGTH, end + MAX_LENGTH
    gpus = host.active_gpus
    allocations = GpuAllocation.objects.filter(
        gpu_id__in=[gpu.pk for gpu in gpus], active=True, start__lt=horizon_end, end__gt=horizon_start
    )
    if exclude_reservation_id is not None:
        allocations = allocations.exclude(reservation_id=exclude_reservation_id)
    booked_in_horizon = ExpressionWrapper(
        Least(F("end"), Value(horizon_end)) - Greatest(F("start"), Value(horizon_start)),
        output_field=DurationField(),
    )
    per_gpu = allocations.values("gpu_id").annotate(
        in_window=Count("pk", filter=Q(start__lt=end, end__gt=start)),
        booked=Sum(booked_in_horizon),
    )
    busy = {row["gpu_id"] for row in per_gpu if row["in_window"]}
    booked = {row["gpu_id"]: row["booked"] for row in per_gpu}
    free = [gpu for gpu in gpus if gpu.pk not in busy]
    return sorted(free, key=lambda gpu: (booked.get(gpu.pk) or timedelta(), gpu.index))


def busy_gpu_ids(
    rows: Iterable[tuple[int, datetime, datetime]], *, start: datetime, end: datetime
) -> set[int]:
    """GPU ids among (gpu_id, start, end) allocation rows that are held during [start, end)."""
    return {gpu_id for gpu_id, row_start, row_end in rows if row_start < end and row_end > start}


def fits_host(*, host: Host, peak: Usage, cpus: Decimal, memory_gb: int) -> bool:
    """Whether a request on top of the peak stays within the host's CPUs and its memory
    (RAM plus swap)."""
    return peak.cpus + cpus <= host.cpus and peak.memory_gb + memory_gb <= host.memory_gb


def gpu_ids_free(*, gpu_ids: list[int], start: datetime, end: datetime, exclude_reservation_id: int) -> bool:
    """Whether these GPUs are held by no other active allocation during [start, end)."""
    return not (
        GpuAllocation.objects.filter(gpu_id__in=gpu_ids, active=True, start__lt=end, end__gt=start)
        .exclude(reservation_id=exclude_reservation_id)
        .exists()
    )


@dataclass(frozen=True)
class LiveRow:
    host_id: int
    host_name: str
    user_id: int
    start: datetime
    end: datetime
    cpus: Decimal
    memory_gb: int


def live_reservations_around(
    *, host_id: int, user_id: int, start: datetime, end: datetime, exclude_reservation_id: int | None = None
) -> list[LiveRow]:
    """Live reservations overlapping [start, end) that are on the host or the user's: all
    that the own-overlap and the CPU/memory rules look at, in one read."""
    rows = Reservation.objects.live().overlapping(start, end).filter(Q(host_id=host_id) | Q(user_id=user_id))
    if exclude_reservation_id is not None:
        rows = rows.exclude(pk=exclude_reservation_id)
    fields = ("host_id", "host__name", "user_id", "start", "end", "cpus", "memory_gb")
    return [LiveRow(*row) for row in rows.values_list(*fields)]


def user_reservations_overlapping(
    *, user_id: int, start: datetime, end: datetime, exclude_reservation_id: int | None = None
) -> QuerySet[Reservation]:
    rows = Reservation.objects.live().filter(user_id=user_id).overlapping(start, end)
    if exclude_reservation_id is not None:
        rows = rows.exclude(pk=exclude_reservation_id)
    return rows


def reservations_for_user(*, user_id: int) -> QuerySet[Reservation]:
    return (
        Reservation.objects.filter(user_id=user_id)
        .select_related("host", "image")
        .prefetch_related("allocations__gpu")
        .order_by("-start")
    )


# Web views: what is free, where a request fits, what a user sees -----------------------

# Starts lie on the grid within two weeks, so the earliest-fit search never tries more than
# one candidate per slot: bounded, and complete.
MAX_FIT_CANDIDATES = MAX_AHEAD // SLOT + 1


@dataclass(frozen=True)
class WindowCapacity:
    """What is still free on a host for every instant of one window."""

    cpus: Decimal
    memory_gb: int
    gpus: int
    gpus_total: int


def window_capacity(*, host: Host, start: datetime, end: datetime) -> WindowCapacity:
    peak = peak_usage(host=host, start=start, end=end)
    free_gpus = gpus_by_preference(host=host, start=start, end=end)
    return WindowCapacity(
        cpus=max(Decimal(host.cpus) - peak.cpus, Decimal(0)),
        memory_gb=max(host.memory_gb - peak.memory_gb, 0),
        gpus=len(free_gpus),
        gpus_total=len(host.active_gpus),
    )


def earliest_fitting_window(
    *,
    host: Host,
    length: timedelta,
    cpus: Decimal,
    memory_gb: int,
    gpu_count: int,
    not_before: datetime,
    latest_start: datetime,
    user_id: int | None = None,
) -> tuple[datetime, datetime] | None:
    """The earliest window of `length` starting in [not_before, latest_start] where the
    request fits the host (CPUs, memory, free GPUs) and, given `user_id`, overlaps none of
    that user's live reservations. A window can only open when something ends, so the
    candidates are `not_before` and the ends of live bookings after it: two queries, then
    a bounded search in memory with the same sweep the booking rule uses."""
    horizon_end = latest_start + length
    live = Reservation.objects.live().overlapping(not_before, horizon_end)
    host_rows = list(live.filter(host=host).values_list("start", "end", "cpus", "memory_gb"))
    own_rows = list(live.filter(user_id=user_id).values_list("start", "end")) if user_id else []
    gpu_ids = [gpu.pk for gpu in host.active_gpus]
    allocation_rows = list(
        GpuAllocation.objects.filter(
            gpu_id__in=gpu_ids, active=True, start__lt=horizon_end, end__gt=not_before
        ).values_list("gpu_id", "start", "end")
    )
    gpus_total = len(gpu_ids)
    ends = {row[1] for row in host_rows} | {row[1] for row in own_rows} | {row[2] for row in allocation_rows}
    candidates = sorted({not_before} | {moment for moment in ends if not_before < moment <= latest_start})
    for start in candidates[:MAX_FIT_CANDIDATES]:
        end = start + length
        if any(row_start < end and row_end > start for row_start, row_end in own_rows):
            continue
        peak = sweep_peak(host_rows, start=start, end=end)
        if not fits_host(host=host, peak=peak, cpus=cpus, memory_gb=memory_gb):
            continue
        if gpus_total - len(busy_gpu_ids(allocation_rows, start=start, end=end)) >= gpu_count:
            return start, end
    return None


def reservation_for_owner(*, user_id: int, pk: int) -> Reservation | None:
    """One of the user's reservations with what its pages show; None for anyone else's."""
    return reservations_for_user(user_id=user_id).filter(pk=pk).first()


@dataclass(frozen=True)
class ReservationsByTime:
    current: list[Reservation]
    upcoming: list[Reservation]
    past: list[Reservation]


def reservations_by_time(*, user_id: int, now: datetime, past_limit: int = 20) -> ReservationsByTime:
    """The user's reservations split around `now`: live ones holding now, live ones ahead,
    and the most recent others (ended, cancelled, failed, or live but gone by)."""
    mine = reservations_for_user(user_id=user_id)
    ahead = Q(status__in=Reservation.LIVE_STATUSES, end__gt=now)
    current, upcoming = [], []
    for reservation in mine.filter(ahead).order_by("start", "id"):
        (current if reservation.start <= now else upcoming).append(reservation)
    past = list(mine.exclude(ahead)[:past_limit])
    return ReservationsByTime(current=current, upcoming=upcoming, past=past)


def recent_events_for_user(*, user_id: int, limit: int = 10) -> QuerySet[ContainerEvent]:
    """Monitor events about the user or the user's reservations, newest first."""
    return (
        ContainerEvent.objects.filter(Q(user_id=user_id) | Q(reservation__user_id=user_id))
        .select_related("host")
        .order_by("-created_at", "-id")[:limit]
    )


def latest_space_audits(*, user_id: int) -> list[SpaceAudit]:
    """The newest space audit of the user on each host."""
    newest = SpaceAudit.objects.filter(user_id=user_id, host_id=OuterRef("host_id")).order_by(
        "-measured_at", "-id"
    )
    return list(
        SpaceAudit.objects.filter(user_id=user_id, pk=Subquery(newest.values("pk")[:1]))
        .select_related("host")
        .order_by("host__name")
    )


def forward_ports_held(*, now: datetime, exclude_user_id: int | None = None) -> set[int]:
    """Forward ports that live reservations still use: a user's reservation keeps the port
    it was booked with, so that port stays taken until the reservation is over."""
    rows = Reservation.objects.live().filter(end__gt=now)
    if exclude_user_id is not None:
        rows = rows.exclude(user_id=exclude_user_id)
    return set(rows.values_list("forward_port", flat=True))


@dataclass(frozen=True)
class HostOutlook:
    host: Host
    capability: Capability
    free: WindowCapacity


@dataclass(frozen=True)
class AuditAgainstQuota:
    audit: SpaceAudit
    capability: Capability


def host_outlooks(*, user: User, now: datetime) -> list[HostOutlook]:
    """For each host: the user's maxima there and what is free in the current slot."""
    this_slot = slot_floor(now)
    return [
        HostOutlook(
            host=host,
            capability=capability_for(user=user, host=host),
            free=window_capacity(host=host, start=this_slot, end=this_slot + SLOT),
        )
        for host in Host.objects.order_by("name")
    ]


def space_audits_against_quota(*, user: User) -> list[AuditAgainstQuota]:
    """The user's newest audit on each host beside the quota that applies there."""
    return [
        AuditAgainstQuota(audit=audit, capability=capability_for(user=user, host=audit.host))
        for audit in latest_space_audits(user_id=user.pk)
    ]
