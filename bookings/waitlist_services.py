"""The waitlist for bookings: a booking that did not fit waits, holding nothing, until a
window of its shape frees up; the waitlist tick then books it through the one booking
service (`reservation_create`), so every booking rule (and every limit added to it) applies.

Order between waiting requests: fair share (the caller passes each user's usage, the job
queue's `priority_usage`, so a light or boosted user's request is tried first), then the
oldest."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_noop

from accounts.models import NotificationKind, User
from accounts.notification_services import Notice, notify
from aivc_portal.scheduler import queue_task
from aivc_portal.task_names import WAITLIST_TASK
from bookings.capacity import Fit, HostLoad, ceil_to_grid, earliest_fit
from bookings.limits import continuous_hold, earliest_within_limits, holdings, limits_for
from bookings.models import Reservation, WaitlistEntry
from bookings.selectors import hosts_open_to, waiting_in_priority_order
from bookings.services import (
    check_end,
    check_host_open_to,
    check_start,
    extra_command_for,
    host_id_for,
    hosts_within_maxima,
    request_resources,
    reservation_create,
    resolve_image,
)
from bookings.timeslots import (
    MAX_AHEAD,
    MAX_LENGTH,
    NOW_FLAG,
    SLOT,
    parse_time_input,
    slot_floor,
    wrong_input,
)
from containers.models import Host, Image

# Enough for "this window, or else the first one after it" on a few hosts; more is a script
# gone wrong, each one tried every minute.
MAX_WAITING_PER_USER = 10
WINDOW_STARTS_NOW = gettext_noop(
    "A window that starts now cannot wait for itself; wait for the first window after now instead."
)

Status = WaitlistEntry.Status
Mode = WaitlistEntry.Mode


def _local(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M}"


def _latest_start(
    value: datetime | str | None, *, mode: str, start: datetime, is_now: bool, now: datetime
) -> datetime:
    """The window's start in the window mode; otherwise the latest start given (a time, or
    `N-day` counted from the start), by default the latest a booking may start now."""
    this_slot = slot_floor(now)
    if mode == Mode.WINDOW:
        if is_now:
            raise ValidationError({"start": WINDOW_STARTS_NOW}, code="window_starts_now")
        return start
    if value in (None, ""):
        return this_slot + MAX_AHEAD
    latest, _ = parse_time_input(value, field="latest_start", base=start, now=now)
    if latest <= now:
        raise wrong_input("The latest start must be in the future.", "latest_start")
    if latest < start:
        raise wrong_input("The latest start must not be before the start.", "latest_start")
    if latest - this_slot > MAX_AHEAD:
        raise wrong_input("The latest start must be within 2 weeks from now.", "latest_start")
    return latest


def waitlist_join(
    *,
    user: User,
    start: datetime | str,
    end: datetime | str,
    cpus: object,
    host: Host | int | str | None = None,
    memory_gb: object,
    gpu_count: object = 0,
    image: Image | int | str | None = None,
    extra_command: str | None = None,
    mode: str = Mode.WINDOW,
    latest_start: datetime | str | None = None,
    now: datetime | None = None,
) -> WaitlistEntry:
    """Puts a booking that does not fit on the waitlist. Its input passes the same checks as
    a booking's (the grid, the 14-day limits, the user's maxima, the image, the command);
    only capacity is left for later. `host` None: any host open to the user."""
    now = now or timezone.now()
    if mode not in Mode.values:
        raise ValidationError({"mode": f"Choose a mode: {', '.join(Mode.values)}."}, code="invalid")
    cpus, memory_gb, gpu_count = request_resources(cpus, memory_gb, gpu_count)
    start, is_now = parse_time_input(start, field="start", base=slot_floor(now), now=now)
    end, _ = parse_time_input(end, field="end", base=start)
    check_start(start=start, now=now, is_now=is_now)
    check_end(start=start, end=end)
    latest = _latest_start(latest_start, mode=mode, start=start, is_now=is_now, now=now)
    if host in (None, ""):
        chosen = None
        candidates = list(hosts_open_to(user=user))
        if not candidates:
            raise ValidationError({"host": "No host is open to you."}, code="no_host")
    else:
        chosen = Host.objects.select_related("access").get(pk=host_id_for(host))
        check_host_open_to(user=user, host=chosen)
        candidates = [chosen]
    hosts_within_maxima(candidates, user=user, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count)
    image = resolve_image(image, user=user)
    command = extra_command_for(extra_command, user=user)
    with transaction.atomic():
        # The user's row serialises their own joins, so the cap below holds under a race.
        User.objects.select_for_update().filter(pk=user.pk).first()
        if WaitlistEntry.objects.filter(user=user, status=Status.WAITING).count() >= MAX_WAITING_PER_USER:
            raise ValidationError(
                f"You have {MAX_WAITING_PER_USER} waiting booking requests already; withdraw one first.",
                code="too_many_waiting",
            )
        entry = WaitlistEntry.objects.create(
            user=user,
            host=chosen,
            mode=mode,
            earliest_start=start,
            latest_start=latest,
            duration_minutes=int((end - start) / timedelta(minutes=1)),
            cpus=cpus,
            memory_gb=memory_gb,
            gpu_count=gpu_count,
            image=image,
            extra_command=command,
            created_at=now,
        )
    # If it fits already (the capacity freed while the user read the refusal), it is booked
    # at once rather than at the next tick.
    queue_task(WAITLIST_TASK)
    return entry


@transaction.atomic
def waitlist_withdraw(*, entry: WaitlistEntry, now: datetime | None = None) -> WaitlistEntry:
    """The user no longer waits. A request already booked, expired or withdrawn stays so."""
    now = now or timezone.now()
    locked = WaitlistEntry.objects.select_for_update().get(pk=entry.pk)
    if locked.status != Status.WAITING:
        raise ValidationError(
            f"Only a waiting request can be withdrawn; this one is {locked.status}.", code="not_waiting"
        )
    locked.status, locked.decided_at, locked.status_message = Status.WITHDRAWN, now, "Withdrawn."
    locked.save(update_fields=["status", "decided_at", "status_message"])
    return locked


# The waitlist tick ---------------------------------------------------------------------------


@dataclass
class WaitlistReport:
    booked: list[int] = field(default_factory=list)
    expired: int = 0
    waiting: int = 0

    def __str__(self) -> str:
        return f"booked {len(self.booked)}, expired {self.expired}, still waiting {self.waiting}"


def waitlist_expire(*, now: datetime) -> int:
    """Requests whose latest start has come expire, and their users are told."""
    expired = 0
    due = WaitlistEntry.objects.filter(status=Status.WAITING, latest_start__lte=now).select_related("host")
    for entry in due:
        with transaction.atomic():
            moved = WaitlistEntry.objects.filter(pk=entry.pk, status=Status.WAITING).update(
                status=Status.EXPIRED,
                decided_at=now,
                status_message="No window fitted before its latest start.",
            )
            if not moved:
                continue  # withdrawn or booked meanwhile
            expired += 1
            where = entry.host.name if entry.host_id else "any host"
            notify(
                notice=Notice(
                    user_id=entry.user_id,
                    kind=NotificationKind.WAITLIST_EXPIRED,
                    key=f"{NotificationKind.WAITLIST_EXPIRED}:waitlist-{entry.pk}",
                    title=f"Your waiting booking request on {where} expired",
                    body=f"No window of {entry.duration_hours} hours fitted before its latest start, "
                    f"{_local(entry.latest_start)}. Nothing was booked.",
                    link=reverse("waitlist"),
                ),
                now=now,
            )
    return expired


class TickCache:
    """What one tick reads once and reuses across requests: each host's load over every
    window a request may ask (a snapshot, read again after a booking on that host), and
    the hosts each request shape may use."""

    def __init__(self, *, now: datetime) -> None:
        self.start = now
        self.end = slot_floor(now) + MAX_AHEAD + MAX_LENGTH
        self._loads: dict[int, HostLoad] = {}
        self._hosts: dict[tuple, list[Host]] = {}
        self._accepting: dict[int, Host] | None = None

    def loads(self, hosts: list[Host]) -> dict[int, HostLoad]:
        for host in hosts:
            if host.pk not in self._loads:
                self._loads[host.pk] = HostLoad.load(host, self.start, self.end)
        return {host.pk: self._loads[host.pk] for host in hosts}

    def booked_on(self, host: Host) -> None:
        self._loads.pop(host.pk, None)

    def hosts_for(self, entry: WaitlistEntry) -> list[Host]:
        key = (entry.user_id, entry.host_id, entry.cpus, entry.memory_gb, entry.gpu_count)
        if key not in self._hosts:
            if self._accepting is None:
                # One instance per host for the whole tick: its GPUs are read once.
                self._accepting = {host.pk: host for host in Host.objects.filter(accepting_bookings=True)}
            self._hosts[key] = _hosts_for(entry, accepting=self._accepting)
        return self._hosts[key]


def _hosts_for(entry: WaitlistEntry, *, accepting: dict[int, Host]) -> list[Host]:
    """The hosts the request may be booked on now: its own, or any open to its user; taking
    bookings, and where it is within the user's maxima."""
    if entry.host_id is not None:
        candidates = [entry.host_id]
    else:
        candidates = hosts_open_to(user=entry.user).values_list("pk", flat=True)
    hosts = [accepting[pk] for pk in candidates if pk in accepting]
    try:
        return hosts_within_maxima(
            hosts, user=entry.user, cpus=entry.cpus, memory_gb=entry.memory_gb, gpu_count=entry.gpu_count
        )
    except ValidationError:
        return []  # over the maxima everywhere now (a profile changed): it waits, and expires


def _record_refusal(entry: WaitlistEntry, message: str) -> None:
    WaitlistEntry.objects.filter(pk=entry.pk, status=Status.WAITING).update(status_message=message[:500])


# A later window of a `first_after` request may pass a usage limit (a cap, the budget, the
# longest hold) that its earliest window breaks; a tick tries this many windows of it.
WINDOWS_PER_TRY = 4
USAGE_LIMIT_CODES = frozenset({"over_cap", "over_budget", "continuous_hold"})


def _codes(error: ValidationError) -> set[str]:
    items = (
        [item for items in error.error_dict.values() for item in items]
        if hasattr(error, "error_dict")
        else []
    )
    items = items or getattr(error, "error_list", [])
    return {code for code in [getattr(item, "code", None) for item in [*items, error]] if code}


def waitlist_try(
    *, entry: WaitlistEntry, now: datetime, cache: TickCache | None = None
) -> Reservation | None:
    """Books the request's earliest fitting window, if one fits now, through
    `reservation_create`; tells the user. None while it still waits (the reason, when the
    booking rules refused it, is kept on the request). A `first_after` request whose
    window a usage limit refuses tries the next windows that fit, a few per tick."""
    cache = cache or TickCache(now=now)
    hosts = cache.hosts_for(entry)
    this_slot = slot_floor(now)
    not_before = max(entry.earliest_start, now)
    not_after = min(entry.latest_start, this_slot + MAX_AHEAD)
    tries = WINDOWS_PER_TRY if entry.mode == Mode.FIRST_AFTER else 1
    for _ in range(tries):
        if not hosts or not_after < not_before:
            return None
        found = earliest_fit(
            hosts=hosts,
            cpus=entry.cpus,
            memory_gb=entry.memory_gb,
            gpu_count=entry.gpu_count,
            duration=entry.duration,
            not_before=not_before,
            not_after=not_after,
            user_id=entry.user_id,
            loads=cache.loads(hosts),
        )
        if found is None:
            return None
        try:
            booked = _book(entry, found=found, now=now)
            if booked is not None:
                cache.booked_on(found.host)
            return booked
        except ValidationError as error:
            _record_refusal(entry, " ".join(error.messages))
            if not _codes(error) & USAGE_LIMIT_CODES:
                return None
            later = _within_limits_from(entry, found=found, now=now)
            if later is None:
                return None
            not_before = max(slot_floor(found.start) + SLOT, ceil_to_grid(later, SLOT))
    return None


def _within_limits_from(entry: WaitlistEntry, *, found: Fit, now: datetime) -> datetime | None:
    """After a usage limit refused `found`: the earliest start at which the request passes
    the user's caps and budget (bookings.limits answers), or, when those pass, one after the
    continuous hold it would have joined; None when it never passes."""
    limits = limits_for(user=entry.user, now=now)
    held = holdings(
        user_ids=[entry.user_id], start=found.start - limits.reach, end=found.end + limits.reach + MAX_AHEAD
    )[entry.user_id]
    later = earliest_within_limits(
        limits=limits,
        held=held,
        start=found.start,
        end=found.end,
        cpus=entry.cpus,
        memory_gb=entry.memory_gb,
        gpu_count=entry.gpu_count,
    )
    if later is not None and later <= found.start:
        _first, last = continuous_hold(held=held, start=found.start, end=found.end)
        later = last + SLOT
    return later


def _book(entry: WaitlistEntry, *, found: Fit, now: datetime) -> Reservation | None:
    """Books `found` for the request, unless it is no longer waiting; the booking rules'
    refusal propagates (nothing is written then)."""
    # A window found at this moment is booked as a `now` booking (from the current slot).
    starts_now = found.start <= now
    with transaction.atomic():
        locked = WaitlistEntry.objects.select_for_update().filter(pk=entry.pk, status=Status.WAITING).first()
        if locked is None:
            return None  # withdrawn meanwhile
        reservation = reservation_create(
            user=entry.user,
            host=found.host,
            start=NOW_FLAG if starts_now else found.start,
            end=slot_floor(now) + entry.duration if starts_now else found.end,
            cpus=entry.cpus,
            memory_gb=entry.memory_gb,
            gpu_count=entry.gpu_count,
            image=entry.image,
            extra_command=entry.extra_command,
            now=now,
        )
        locked.status, locked.reservation, locked.decided_at = Status.BOOKED, reservation, now
        locked.status_message = ""
        locked.save(update_fields=["status", "reservation", "decided_at", "status_message"])
        notify(
            notice=Notice(
                user_id=entry.user_id,
                kind=NotificationKind.WAITLIST_BOOKED,
                key=f"{NotificationKind.WAITLIST_BOOKED}:waitlist-{entry.pk}",
                title=f"Your waiting booking on {found.host.name} is booked",
                body=f"{_local(reservation.start)} - {_local(reservation.end)}: {reservation.cpus:g} CPUs, "
                f"{reservation.memory_gb} GB, {reservation.gpu_count} GPU(s). Its container starts then.",
                link=reverse("reservation-detail", kwargs={"pk": reservation.pk}),
            ),
            now=now,
        )
    return reservation


def waitlist_book_due(*, now: datetime, usage: Mapping[int, float] | None = None) -> WaitlistReport:
    """One waitlist tick: expire what is due, then try each waiting request in fair-share
    order (`usage`: each user's fair-share usage, lower first). Each booking takes what it
    books, so a later request only gets what the earlier ones left."""
    report = WaitlistReport(expired=waitlist_expire(now=now))
    cache = TickCache(now=now)
    for entry in waiting_in_priority_order(usage=usage or {}):
        reservation = waitlist_try(entry=entry, now=now, cache=cache)
        if reservation is not None:
            report.booked.append(reservation.pk)
        else:
            report.waiting += 1
    return report
