"""Reads for the container lifecycle."""

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Count, IntegerField, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from bookings.models import Reservation
from containers.agent_selectors import served_hosts
from containers.inventory_selectors import PRESENCE_TRUSTED_FOR
from containers.models import ContainerEvent, Host, Image, ImagePresence, SpaceAudit

STARTS_PENDING = (Reservation.Status.SCHEDULED, Reservation.Status.BLOCKED)
LAUNCHED = (Reservation.Status.STARTING, Reservation.Status.RUNNING)
# jobs.models.Job.ACTIVE_STATUSES, by value: this module sits below the jobs app.
JOB_ACTIVE_STATUSES = ("starting", "running")


def hosts_to_reconcile(*, host_id: int | None = None) -> QuerySet[Host]:
    """The hosts this process serves (its own as an agent), or the one of them asked for."""
    hosts = served_hosts()
    return hosts.filter(pk=host_id) if host_id is not None else hosts


def reservations_in_window(*, host: Host, now: datetime) -> QuerySet[Reservation]:
    """Live reservations whose window [start, end) contains now: what should run."""
    return (
        Reservation.objects.live()
        .filter(host=host, start__lte=now, end__gt=now)
        .select_related("user", "host", "image")
        .prefetch_related("allocations__gpu")
        .order_by("start", "pk")
    )


def reservations_starting(*, host: Host, after: datetime, until: datetime) -> QuerySet[Reservation]:
    """Reservations still to launch whose start lies in (after, until]."""
    return (
        Reservation.objects.filter(host=host, status__in=STARTS_PENDING, start__gt=after, start__lte=until)
        .select_related("user", "host")
        .order_by("start", "pk")
    )


def reservations_past_window(*, host: Host, now: datetime) -> QuerySet[Reservation]:
    """Live reservations whose window is over, of every kind: what must stop (or never
    started). Those of jobs still starting or running are left to the job lifecycle,
    which stops their container first; a job reservation whose job has finished (say a
    cancel that raced its start) is closed here like any booking."""
    running_job = Q(kind=Reservation.Kind.JOB, job__status__in=JOB_ACTIVE_STATUSES)
    past = Reservation.objects.live().filter(host=host, end__lte=now).exclude(running_job)
    return past.select_related("user").order_by("end")


def reservations_by_ids(*, ids: set[int]) -> dict[int, Reservation]:
    return {r.pk: r for r in Reservation.objects.filter(pk__in=ids).select_related("user")}


def next_boundary(*, after: datetime, until: datetime) -> datetime | None:
    """The first instant in (after, until] at which a live reservation on a host this
    process serves starts or ends."""
    window = Q(status__in=Reservation.LIVE_STATUSES, host__in=served_hosts())
    starts = Reservation.objects.filter(
        window, status__in=STARTS_PENDING, start__gt=after, start__lte=until
    ).aggregate(first=Min("start"))["first"]
    ends = Reservation.objects.filter(window, end__gt=after, end__lte=until).aggregate(first=Min("end"))[
        "first"
    ]
    return min((instant for instant in (starts, ends) if instant is not None), default=None)


def space_verdicts(*, user_ids: Iterable[int], host: Host) -> dict[int, SpaceAudit]:
    """The audits that decide whether each user may launch, by user id (one read): the
    latest that is either complete or already over quota with what it measured before
    the timeout. A timed-out audit under quota is unknown and decides nothing; a user
    with no deciding audit has no entry."""
    user_ids = set(user_ids)
    if not user_ids:
        return {}
    deciding = SpaceAudit.objects.filter(host=host).filter(Q(complete=True) | Q(over_quota=True))
    latest = deciding.filter(user_id=OuterRef("user_id")).order_by("-measured_at", "-pk").values("pk")[:1]
    return {audit.user_id: audit for audit in deciding.filter(user_id__in=user_ids, pk=Subquery(latest))}


def users_to_audit(*, host: Host, now: datetime, until: datetime) -> list[int]:
    """Users with a live reservation on the host that runs now or starts before `until`."""
    rows = Reservation.objects.live().filter(host=host, start__lte=until, end__gt=now)
    return sorted(set(rows.values_list("user_id", flat=True)))


def blocked_reservations(*, user_id: int, host: Host) -> QuerySet[Reservation]:
    return Reservation.objects.filter(user_id=user_id, host=host, status=Reservation.Status.BLOCKED)


def recent_event_exists(*, host: Host | None, level: str, message: str, since: datetime) -> bool:
    return ContainerEvent.objects.filter(
        host=host, level=level, message=message, created_at__gte=since
    ).exists()


def image_presences_for(*, reservations: Iterable[Reservation]) -> dict[int, ImagePresence]:
    """What the hosts' agents last found about each reservation's image, by reservation id;
    a reservation whose image was not checked yet has no entry. One query."""
    pairs = {(r.pk, r.host_id, r.image_id) for r in reservations if r.image_id}
    if not pairs:
        return {}
    wanted = Q()
    for _, host_id, image_id in pairs:
        wanted |= Q(host_id=host_id, image_id=image_id)
    found = {(p.host_id, p.image_id): p for p in ImagePresence.objects.filter(wanted).select_related("image")}
    return {pk: found[(host_id, image_id)] for pk, host_id, image_id in pairs if (host_id, image_id) in found}


def bookable_images(*, now: datetime | None = None) -> QuerySet[Image]:
    """The images a booking may choose: active, entered with the portal's keys (a legacy
    password image would start a container nobody can log in to), and not known to be
    missing on every host (each host's agent found it absent and unpullable within
    PRESENCE_TRUSTED_FOR): a container of it could start nowhere."""
    now = now or timezone.now()
    images = Image.objects.filter(is_active=True, login=Image.Login.KEYS).order_by("reference")
    missing_on = (
        ImagePresence.objects.filter(
            image=OuterRef("pk"),
            state=ImagePresence.State.FAILED,
            checked_at__gte=now - PRESENCE_TRUSTED_FOR,
        )
        .values("image")
        .annotate(hosts=Count("host", distinct=True))
        .values("hosts")
    )
    hosts = Host.objects.count()
    if not hosts:
        return images
    missing_hosts = Coalesce(Subquery(missing_on, output_field=IntegerField()), 0)
    return images.annotate(missing_hosts=missing_hosts).exclude(missing_hosts__gte=hosts)


def image_presence(*, host: Host, image: Image) -> ImagePresence | None:
    return ImagePresence.objects.filter(host=host, image=image).first()
