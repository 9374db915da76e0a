from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Greatest
from django.utils.translation import gettext as _

from accounts.models import CapabilityProfile, User
from accounts.selectors import Capability, capability_for
from bookings.capacity import Availability, HostLoad, availability
from bookings.models import HostAccess, Reservation, WaitlistEntry
from bookings.timeslots import SLOT, slot_floor
from containers.inventory_selectors import Health, host_health, hosts_with_health
from containers.models import ContainerEvent, Host, SpaceAudit


def reservations_for_user(*, user_id: int) -> QuerySet[Reservation]:
    """The user's bookings; a batch job's reservation is managed through its job only (its
    time limit is the job's)."""
    return (
        Reservation.objects.bookings()
        .filter(user_id=user_id)
        .select_related("host", "image")
        .prefetch_related("allocations__gpu")
        .order_by("-start")
    )


# Web views: what a user sees ----------------------------------------------------------


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
    free: Availability


@dataclass(frozen=True)
class AuditAgainstQuota:
    audit: SpaceAudit
    capability: Capability


def host_outlooks(*, user: User, now: datetime) -> list[HostOutlook]:
    """For each host: the user's maxima there and what a `now` booking could have, from this
    moment to the end of the current slot."""
    slot_end = slot_floor(now) + SLOT
    return [
        HostOutlook(
            host=host,
            capability=capability_for(user=user, host=host),
            free=availability(host=host, start=now, end=slot_end),
        )
        for host in Host.objects.order_by("name")
    ]


def space_audits_against_quota(*, user: User) -> list[AuditAgainstQuota]:
    """The user's newest audit on each host beside the quota that applies there."""
    return [
        AuditAgainstQuota(audit=audit, capability=capability_for(user=user, host=audit.host))
        for audit in latest_space_audits(user_id=user.pk)
    ]


def hosts_open_to(*, user: User) -> QuerySet[Host]:
    """The hosts the user may book: those no maintainer restricted, and the restricted ones
    that list the user or the user's profile (no profile: the default one). The one place
    the host restriction is decided."""
    # Without a profile of their own, the default one (a subquery, so building this costs
    # no query; with no default profile it matches nothing).
    default_id = CapabilityProfile.objects.filter(is_default=True).values("pk")[:1]
    profile = user.capability_profile_id or Subquery(default_id)
    listed = HostAccess.objects.filter(Q(users=user) | Q(profiles=profile))
    return Host.objects.filter(
        ~Q(pk__in=_restricting().values("host_id")) | Q(pk__in=listed.values("host_id"))
    ).order_by("name")


def _restricting() -> QuerySet[HostAccess]:
    """The access rows that restrict their host: a row listing nobody restricts nothing."""
    return HostAccess.objects.filter(Q(users__isnull=False) | Q(profiles__isnull=False))


def open_host_ids(*, users: Iterable[User], host_ids: Iterable[int]) -> dict[int, frozenset[int]]:
    """For each user, those of `host_ids` open to them (hosts_open_to): one query while no
    host among them is restricted, as in most labs; one more per user otherwise."""
    host_ids = frozenset(host_ids)
    restricted = frozenset(_restricting().filter(host_id__in=host_ids).values_list("host_id", flat=True))
    if not restricted:
        return {user.pk: host_ids for user in users}
    return {
        user.pk: (host_ids - restricted)
        | frozenset(hosts_open_to(user=user).filter(pk__in=restricted).values_list("pk", flat=True))
        for user in users
    }


def host_open_to(*, user: User, host: Host) -> bool:
    # Most hosts are restricted to nobody: a host without a HostAccess row is open, and a
    # host read with select_related("access") (the booking's host lock) answers that with
    # no query. Only a restricted host asks the rule above (this check sits in every
    # booking's path).
    try:
        access_id = host.access.pk
    except HostAccess.DoesNotExist:
        return True
    restricted = _restricting().filter(pk=access_id)
    return not restricted.exists() or hosts_open_to(user=user).filter(pk=host.pk).exists()


def host_choice_labels(*, user: User, now: datetime, hosts: Sequence[Host] | None = None) -> dict[int, str]:
    """Each host the user may book (or of `hosts`, listed already), named with what a `now`
    booking could have there (from this moment to the end of the current slot) and, when
    its agent does not answer, a word that says so. One capacity read for all hosts."""
    slot_end = slot_floor(now) + SLOT
    pairs = hosts_with_health(now=now, hosts=hosts_open_to(user=user)) if hosts is None else None
    if pairs is None:
        pairs = [(host, host_health(host=host, now=now)) for host in hosts]
    loads = HostLoad.load_all([host for host, _health in pairs], now, slot_end)
    labels = {}
    for host, health in pairs:
        free = loads[host.pk].availability(now, slot_end)
        label = _("%(host)s — free now: %(cpus)s CPUs, %(memory)s GB, %(gpus)s/%(total)s GPUs") % {
            "host": host.name,
            "cpus": f"{free.cpus.normalize():f}",
            "memory": free.memory_gb,
            "gpus": free.gpus,
            "total": free.gpus_total,
        }
        if health in (Health.STALE, Health.OFFLINE):
            label += " — " + _("its agent is not answering")
        labels[host.pk] = label
    return labels


def booking_counts_by_status() -> dict[str, int]:
    """Bookings (not jobs' reservations) in each status, every status listed."""
    rows = Reservation.objects.bookings().order_by().values_list("status").annotate(count=Count("pk"))
    return {status: 0 for status in Reservation.Status.values} | dict(rows)


def booking_start_delays(*, since: datetime) -> list[timedelta]:
    """For each booking whose container started since `since`: how long after its window
    opened it started. A booking made for "now" (or moved to start now) opens when it was
    made, not at the slot it was put on (up to 29 minutes earlier)."""
    opened = Greatest("start", "created_at")
    delays = (
        Reservation.objects.bookings()
        .filter(started_at__gte=since)
        .values_list(ExpressionWrapper(F("started_at") - opened, output_field=DurationField()), flat=True)
    )
    return [max(delay, timedelta(0)) for delay in delays]


# The waitlist ------------------------------------------------------------------------------


def waitlist_for_user(*, user_id: int) -> QuerySet[WaitlistEntry]:
    """The user's waiting booking requests, waiting ones first, then the newest."""
    return (
        WaitlistEntry.objects.filter(user_id=user_id)
        .select_related("host", "image", "reservation")
        .annotate(
            not_waiting=Case(
                When(status=WaitlistEntry.Status.WAITING, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("not_waiting", "-created_at", "-id")
    )


def waitlist_entry_for_owner(*, user_id: int, pk: int) -> WaitlistEntry | None:
    """One of the user's waiting requests; None for anyone else's (the views answer 404)."""
    return waitlist_for_user(user_id=user_id).filter(pk=pk).first()


def waiting_in_priority_order(*, usage: Mapping[int, float]) -> list[WaitlistEntry]:
    """The waiting requests in the order the waitlist tick tries them: lower fair-share
    usage first (the job queue's order), then the oldest request."""
    # A deactivated account's requests wait untried (and expire): it could not use a booking.
    waiting = WaitlistEntry.objects.filter(
        status=WaitlistEntry.Status.WAITING, user__is_active=True
    ).select_related("user", "host", "image")
    return sorted(waiting, key=lambda entry: (usage.get(entry.user_id, 0.0), entry.created_at, entry.pk))
