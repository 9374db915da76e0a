"""Writes of the container lifecycle: the monitor log and the reservation statuses the
scheduler moves through. Each status change is guarded by the statuses it may come from,
so a cancel or release that lands while a tick runs is never overwritten."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from accounts.models import User
from bookings.models import Reservation
from containers.events import Event
from containers.models import ContainerEvent, Host, SpaceAudit
from containers.selectors import LAUNCHED, STARTS_PENDING, recent_event_exists

Status = Reservation.Status
Level = ContainerEvent.Level


def _event_row(
    *,
    level: str,
    sign: str,
    message: str,
    now: datetime,
    host: Host | None = None,
    reservation: Reservation | None = None,
    user: User | None = None,
    template: str = "",
    params: Mapping[str, object] | None = None,
) -> ContainerEvent:
    """A monitor-log line, not yet saved; a reservation's line names its user and host."""
    if reservation is not None:
        user = user or reservation.user
        host = host or reservation.host
    return ContainerEvent(
        created_at=now,
        level=level,
        sign=sign,
        message=message,
        template=template,
        params=dict(params or {}),
        user=user,
        reservation=reservation,
        host=host,
    )


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
    template: str = "",
    params: Mapping[str, object] | None = None,
) -> ContainerEvent | None:
    """Writes one monitor-log line. With `quiet_for`, the same message for the same host is
    written at most once in that period (an engine that stays down is one line per period,
    not one a minute)."""
    now = now or timezone.now()
    if quiet_for and recent_event_exists(host=host, level=level, message=message, since=now - quiet_for):
        return None
    row = _event_row(
        level=level,
        sign=sign,
        message=message,
        now=now,
        host=host,
        reservation=reservation,
        user=user,
        template=template,
        params=params,
    )
    row.save(force_insert=True)
    return row


def events_record_for(*, records: Sequence[tuple[Event, Reservation]], now: datetime) -> None:
    """Writes one event per reservation in one INSERT (a tick that launched hundreds)."""
    ContainerEvent.objects.bulk_create(
        [
            _event_row(
                level=event.kind.level,
                sign=event.kind.sign,
                message=event.message,
                now=now,
                reservation=reservation,
                template=event.template,
                params=event.params,
            )
            for event, reservation in records
        ]
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
        template=event.template,
        params=event.params,
    )


def _per_row(values: dict[int, object], *, field: str) -> RawSQL:
    """A value per row of one UPDATE of Reservation.`field`, as `CASE id WHEN ... THEN ...
    END` (Django's Case/When costs about a millisecond per row to build: 0.2 s for a host's
    launches). Each value is stored as the field would store it (on SQLite a datetime is
    naive UTC text, not the driver's own format)."""
    model_field = Reservation._meta.get_field(field)
    sql = "CASE id " + " ".join("WHEN %s THEN %s" for _ in values) + " END"
    params = [
        item
        for pk, value in values.items()
        for item in (pk, model_field.get_db_prep_value(value, connection, prepared=False))
    ]
    # Only placeholders are written into the SQL; the ids and values go as parameters.
    return RawSQL(sql, params, output_field=model_field)  # noqa: S611


def _move_all(
    reservations: Sequence[Reservation], *, allowed: tuple[str, ...], where: Q | None = None, **changes
) -> list[Reservation]:
    """Applies `changes` to those of `reservations` still in one of `allowed` (and matching
    `where`), in one UPDATE, and keeps the objects in step; a change given as a dict
    {reservation id: value} differs per row. Returns the ones that moved. Several at once
    are locked and read first, which tells which of them moved; one alone is told by the
    count the UPDATE returns."""
    where = where or Q()
    if not reservations:
        return []

    values = {
        name: _per_row(value, field=name) if isinstance(value, dict) else value
        for name, value in changes.items()
    }
    if len(reservations) == 1:
        [reservation] = reservations
        candidates = Reservation.objects.filter(where, pk=reservation.pk, status__in=allowed)
        moved = reservations if candidates.update(**values, updated_at=timezone.now()) else []
    else:
        wanted = {reservation.pk: reservation for reservation in reservations}
        with transaction.atomic():
            # Locked in id order, so two writers that lock several never wait on each other.
            ids = set(
                Reservation.objects.select_for_update()
                .filter(where, pk__in=wanted, status__in=allowed)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if ids:
                Reservation.objects.filter(pk__in=ids).update(**values, updated_at=timezone.now())
        moved = [reservation for pk, reservation in wanted.items() if pk in ids]
    for reservation in moved:
        for name, value in changes.items():
            setattr(reservation, name, value[reservation.pk] if isinstance(value, dict) else value)
    return moved


def _move(reservation: Reservation, *, allowed: tuple[str, ...], where: Q | None = None, **changes) -> bool:
    """`_move_all` for one reservation: whether it moved."""
    return bool(_move_all([reservation], allowed=allowed, where=where, **changes))


def _over_at(now: datetime, *, only_if_over: bool) -> Q | None:
    # The tick read the window as over; an extension that committed since has the last word.
    return Q(end__lte=now) if only_if_over else None


def reservations_mark_starting(*, reservations: Sequence[Reservation]) -> list[Reservation]:
    """Those still due move to starting (one UPDATE); returns them."""
    return _move_all(
        reservations,
        allowed=(*STARTS_PENDING, Status.STARTING, Status.RUNNING),
        status=Status.STARTING,
        status_message="",
    )


def reservation_mark_starting(*, reservation: Reservation) -> bool:
    return bool(reservations_mark_starting(reservations=[reservation]))


def reservations_mark_running(
    *, containers: Sequence[tuple[Reservation, str]], now: datetime
) -> list[Reservation]:
    """Each (reservation, container id) whose reservation is still due or launched moves to
    running with its container (one UPDATE), keeping a first start time; returns the
    reservations that moved."""
    return _move_all(
        [reservation for reservation, _ in containers],
        allowed=(*STARTS_PENDING, *LAUNCHED),
        status=Status.RUNNING,
        container_id={reservation.pk: container_id for reservation, container_id in containers},
        started_at={reservation.pk: reservation.started_at or now for reservation, _ in containers},
        status_message="",
    )


def reservation_mark_running(*, reservation: Reservation, container_id: str, now: datetime) -> bool:
    return bool(reservations_mark_running(containers=[(reservation, container_id)], now=now))


def reservation_mark_ended(
    *, reservation: Reservation, now: datetime, message: str = "", only_if_over: bool = False
) -> bool:
    """Ended; with `only_if_over`, only while its stored end is not after `now`."""
    return _move(
        reservation,
        allowed=Reservation.LIVE_STATUSES,
        where=_over_at(now, only_if_over=only_if_over),
        status=Status.ENDED,
        ended_at=now,
        status_message=message,
    )


def reservation_mark_failed(
    *, reservation: Reservation, now: datetime, message: str, only_if_over: bool = False
) -> bool:
    """Failed for good: the reservation stops holding its GPUs. With `only_if_over`, only
    while its stored end is not after `now`."""
    moved = _move(
        reservation,
        allowed=Reservation.LIVE_STATUSES,
        where=_over_at(now, only_if_over=only_if_over),
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
    home_gb: float = 0.0,
) -> SpaceAudit:
    return SpaceAudit.objects.create(
        user_id=user_id,
        host=host,
        work_gb=round(work_gb, 3),
        backup_gb=round(backup_gb, 3),
        home_gb=round(home_gb, 3),
        complete=complete,
        over_quota=over_quota,
        unreadable=unreadable,
        measured_at=now,
    )
