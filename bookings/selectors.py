from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Greatest, Least

from bookings.models import GpuAllocation, Reservation
from bookings.timeslots import MAX_LENGTH
from containers.models import Gpu, Host


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
    boundaries = []
    for row_start, row_end, cpus, memory_gb in rows.values_list("start", "end", "cpus", "memory_gb"):
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


def gpu_ids_free(*, gpu_ids: list[int], start: datetime, end: datetime, exclude_reservation_id: int) -> bool:
    """Whether these GPUs are held by no other active allocation during [start, end)."""
    return not (
        GpuAllocation.objects.filter(gpu_id__in=gpu_ids, active=True, start__lt=end, end__gt=start)
        .exclude(reservation_id=exclude_reservation_id)
        .exists()
    )


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
