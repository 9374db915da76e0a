from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import QuerySet

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
    by lowest index."""
    horizon_start, horizon_end = start - MAX_LENGTH, end + MAX_LENGTH
    allocations = GpuAllocation.objects.filter(
        gpu__host=host, active=True, start__lt=horizon_end, end__gt=horizon_start
    )
    if exclude_reservation_id is not None:
        allocations = allocations.exclude(reservation_id=exclude_reservation_id)
    busy: set[int] = set()
    booked: dict[int, timedelta] = {}
    for gpu_id, row_start, row_end in allocations.values_list("gpu_id", "start", "end"):
        if row_start < end and row_end > start:
            busy.add(gpu_id)
        overlap = min(row_end, horizon_end) - max(row_start, horizon_start)
        booked[gpu_id] = booked.get(gpu_id, timedelta()) + overlap
    free = [gpu for gpu in host.gpus.filter(is_active=True) if gpu.pk not in busy]
    return sorted(free, key=lambda gpu: (booked.get(gpu.pk, timedelta()), gpu.index))


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
