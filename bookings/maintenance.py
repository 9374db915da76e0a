"""A host's maintenance lock and drain: what maintainers do before working on a server."""

from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import reservation_cancel, reservation_release
from containers.models import Host

MAINTAINER = Reservation.EndedBy.MAINTAINER

# What the owners of what a drain stops or cancels are told.
DRAINED = "Its host was taken out of service for maintenance."


@dataclass
class DrainResult:
    released: list[Reservation] = field(default_factory=list)
    cancelled: list[Reservation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def host_set_accepting_bookings(*, host: Host, accepting: bool) -> Host:
    """The maintenance lock: off, the host refuses new reservations; existing ones stay."""
    Host.objects.filter(pk=host.pk).update(accepting_bookings=accepting)
    host.accepting_bookings = accepting
    return host


def reservations_to_drain(*, host: Host, now: datetime) -> QuerySet[Reservation]:
    """Live reservations on `host` that have not ended: what a drain releases or cancels."""
    return (
        Reservation.objects.live()
        .filter(host=host, end__gt=now)
        .select_related("user", "host")
        .order_by("start", "pk")
    )


def host_drain(*, host: Host, now: datetime | None = None) -> DrainResult:
    """Locks the host, releases what runs now and cancels what is scheduled. One reservation
    that cannot be stopped is reported and does not stop the others."""
    now = now or timezone.now()
    host_set_accepting_bookings(host=host, accepting=False)
    result = DrainResult()
    for reservation in reservations_to_drain(host=host, now=now):
        try:
            if not reservation.can_cancel(now):
                result.released.append(
                    reservation_release(reservation=reservation, now=now, reason=DRAINED, ended_by=MAINTAINER)
                )
            else:
                result.cancelled.append(
                    reservation_cancel(reservation=reservation, now=now, reason=DRAINED, ended_by=MAINTAINER)
                )
        except ValidationError as error:
            result.errors.append(f"{reservation}: {' '.join(error.messages)}")
    return result
