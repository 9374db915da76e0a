"""Another system's reservations (the legacy importer's, bookings/legacy_import), written
as they stand: the rules for a new booking do not apply, those that keep the portal
consistent do, under the booking services' host lock."""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from accounts.services import check_forward_port
from aivc_portal.model_updates import Saved, model_create, model_update
from bookings.capacity import availability
from bookings.models import GpuAllocation, Reservation
from bookings.selectors import forward_ports_held
from bookings.services import check_no_own_overlap, lock_host, refused_by_database
from containers.models import Gpu, Host, Image


def reservation_import(
    *,
    user: User,
    host: Host,
    start: datetime,
    end: datetime,
    cpus: Decimal,
    memory_gb: int,
    gpus: Sequence[Gpu],
    status: str,
    image: Image | None,
    extra_command: str,
    forward_port: int,
    now: datetime | None = None,
) -> Saved:
    """Writes one reservation of the old system's history or schedule as it stands, matched
    on (user, host, start) so a second import updates instead of duplicating. The rules for
    a new booking (a start in the future and within 14 days, the profile's maxima, an
    active image, an open host) do not apply: the row happened, or was booked under the
    old rules. What keeps the portal consistent does: a live row must not overlap its
    user's other bookings and must find its GPUs free (the capacity engine, as a booking
    does); an ended row keeps its GPUs as inactive allocations, so history the old checker
    double-booked still imports, and a live row's container will publish its port, which
    must be one the user may have. Queues nothing: the scheduler takes over afterwards."""
    now = now or timezone.now()
    try:
        with transaction.atomic():
            host = lock_host(host.pk)
            existing = Reservation.objects.filter(user=user, host=host, start=start).first()
            live = status in Reservation.LIVE_STATUSES
            if live:
                _check_imported_window_free(
                    user=user, host=host, start=start, end=end, gpus=gpus, existing=existing
                )
            if live and forward_port != user.forward_port:
                held = forward_ports_held(now=now, exclude_user_id=user.pk)
                check_forward_port(user=user, port=forward_port, ports_held=held)
            values = {
                "end": end,
                "booked_end": end,
                "cpus": cpus,
                "memory_gb": memory_gb,
                "gpu_count": len(gpus),
                "image": image,
                "extra_command": extra_command,
                "forward_port": forward_port,
                "status": status,
                "started_at": None if status == Reservation.Status.SCHEDULED else start,
                "ended_at": end if status == Reservation.Status.ENDED else None,
            }
            if existing is None:
                saved = Saved(
                    model_create(
                        model=Reservation, values={"user": user, "host": host, "start": start, **values}
                    ),
                    created=True,
                )
            else:
                saved = Saved(existing, changed=model_update(instance=existing, values=values))
            if _sync_imported_allocations(
                reservation=saved.instance, gpus=gpus, active=live, fresh=saved.created
            ):
                saved.changed = saved.changed or ["GPU allocations"]
    except IntegrityError as error:
        raise refused_by_database(error) from None
    return saved


def _check_imported_window_free(
    *,
    user: User,
    host: Host,
    start: datetime,
    end: datetime,
    gpus: Sequence[Gpu],
    existing: Reservation | None,
) -> None:
    free = availability(
        host=host,
        start=start,
        end=end,
        exclude_reservation_id=existing.pk if existing else None,
        booking_user_id=user.pk,
    )
    check_no_own_overlap(free=free)
    free_ids = {gpu.pk for gpu in free.free_gpus}
    for gpu in gpus:
        if not gpu.is_active:
            raise ValidationError(
                f"GPU {gpu.index} is out of service; a maintainer can put it back in admin",
                code="gpu_out_of_service",
            )
        if gpu.pk not in free_ids:
            raise ValidationError(
                f"GPU {gpu.index} is already held by another running or scheduled reservation "
                "for an overlapping time",
                code="no_capacity",
            )


def _sync_imported_allocations(
    *, reservation: Reservation, gpus: Sequence[Gpu], active: bool, fresh: bool
) -> bool:
    """The reservation holds exactly these GPUs for its window (inactive when it has
    ended); a `fresh` one holds none yet. Returns whether anything changed."""
    wanted = {(gpu.pk, reservation.start, reservation.end, active) for gpu in gpus}
    current = set() if fresh else set(reservation.allocations.values_list("gpu_id", "start", "end", "active"))
    if wanted == current:
        return False
    if current:
        reservation.allocations.all().delete()
    GpuAllocation.objects.bulk_create(
        GpuAllocation(reservation=reservation, gpu_id=gpu_id, start=start, end=end, active=is_active)
        for gpu_id, start, end, is_active in wanted
    )
    return True
