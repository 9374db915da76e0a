"""Writes of the container lifecycle: the monitor log and the reservation statuses the
scheduler moves through. Each status change is guarded by the statuses it may come from,
so a cancel or release that lands while a tick runs is never overwritten."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from accounts.models import User
from bookings.models import Reservation
from containers.events import Event
from containers.models import ContainerEvent, Host, SpaceAudit
from containers.selectors import LAUNCHED, STARTS_PENDING, recent_event_exists

Status = Reservation.Status
Level = ContainerEvent.Level


def event_log(
    *,
    level: str,
    message: str,
    sign: str = "",
    host: Host | None = None,
    reservation: Reservation | None = None,
    user: User | None = None,
    now: datetime | None = None,
    quiet_for: timedelta | None = None,
) -> ContainerEvent | None:
    """Writes one monitor-log line. With `quiet_for`, the same message for the same host is
    written at most once in that period (an engine that stays down is one line per period,
    not one a minute)."""
    now = now or timezone.now()
    if quiet_for and recent_event_exists(host=host, level=level, message=message, since=now - quiet_for):
        return None
    if reservation is not None:
        user = user or reservation.user
        host = host or reservation.host
    return ContainerEvent.objects.create(
        created_at=now, level=level, sign=sign, message=message, user=user, reservation=reservation, host=host
    )


def event_record(
    *,
    event: Event,
    host: Host | None = None,
    reservation: Reservation | None = None,
    user: User | None = None,
    now: datetime | None = None,
    quiet_for: timedelta | None = None,
) -> ContainerEvent | None:
    """Writes one event of the catalogue (`containers.events`) with its level and sign."""
    return event_log(
        level=event.kind.level,
        sign=event.kind.sign,
        message=event.message,
        host=host,
        reservation=reservation,
        user=user,
        now=now,
        quiet_for=quiet_for,
    )


def _move(reservation: Reservation, *, allowed: tuple[str, ...], **changes) -> bool:
    """Applies `changes` if the reservation is still in one of `allowed`; keeps the object
    in step. Returns whether it moved."""
    moved = Reservation.objects.filter(pk=reservation.pk, status__in=allowed).update(
        **changes, updated_at=timezone.now()
    )
    if moved:
        for name, value in changes.items():
            setattr(reservation, name, value)
    return bool(moved)


def reservation_mark_starting(*, reservation: Reservation) -> bool:
    return _move(
        reservation,
        allowed=(*STARTS_PENDING, Status.STARTING, Status.RUNNING),
        status=Status.STARTING,
        status_message="",
    )


def reservation_mark_running(*, reservation: Reservation, container_id: str, now: datetime) -> bool:
    return _move(
        reservation,
        allowed=(*STARTS_PENDING, *LAUNCHED),
        status=Status.RUNNING,
        container_id=container_id,
        started_at=reservation.started_at or now,
        status_message="",
    )


def reservation_mark_ended(*, reservation: Reservation, now: datetime, message: str = "") -> bool:
    return _move(
        reservation,
        allowed=Reservation.LIVE_STATUSES,
        status=Status.ENDED,
        ended_at=now,
        status_message=message,
    )


def reservation_mark_failed(*, reservation: Reservation, now: datetime, message: str) -> bool:
    """Failed for good: the reservation stops holding its GPUs."""
    moved = _move(
        reservation,
        allowed=Reservation.LIVE_STATUSES,
        status=Status.FAILED,
        ended_at=now,
        status_message=message[:500],
    )
    if moved:
        reservation.allocations.update(active=False)
    return moved


def reservation_mark_blocked(*, reservation: Reservation, message: str) -> bool:
    return _move(
        reservation,
        allowed=(*STARTS_PENDING, Status.STARTING),
        status=Status.BLOCKED,
        status_message=message[:500],
    )


def reservation_count_restart(*, reservation: Reservation) -> int:
    _move(reservation, allowed=Reservation.LIVE_STATUSES, restart_count=reservation.restart_count + 1)
    return reservation.restart_count


def reservation_clear_restart_request(*, reservation: Reservation) -> None:
    _move(reservation, allowed=Reservation.LIVE_STATUSES, restart_requested=False)


def space_audit_record(
    *,
    user_id: int,
    host: Host,
    work_gb: float,
    backup_gb: float,
    complete: bool,
    over_quota: bool,
    now: datetime,
    unreadable: str = "",
) -> SpaceAudit:
    return SpaceAudit.objects.create(
        user_id=user_id,
        host=host,
        work_gb=round(work_gb, 3),
        backup_gb=round(backup_gb, 3),
        complete=complete,
        over_quota=over_quota,
        unreadable=unreadable,
        measured_at=now,
    )
