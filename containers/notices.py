"""What users should be told about, read from reservations, telemetry and the monitor log:
one Notice per event, each with a key naming (kind, object, instant), so the sender can
make each one exactly once. Reads only; accounts.tasks.send_notifications records and
sends. It sits with the lifecycle, whose events (containers/events.py) it reads."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import NotificationKind, User
from bookings.models import Reservation
from containers import events
from containers.models import ContainerEvent

Status = Reservation.Status
ENGINE_DOWN_SIGN = events.ENGINE_UNAVAILABLE.sign
GPU_DUPLICATE_SIGN = events.GPU_DUPLICATE_WARNING.sign
JOB_FINISHED_SIGN = events.JOB_FINISHED.sign
# events.job_finished names the job as "job #<id>"; the link goes to that job's page.
JOB_NUMBER = re.compile(r"job #(\d{1,18})")


@dataclass(frozen=True)
class Notice:
    user_id: int
    kind: str
    key: str
    title: str
    body: str
    link: str
    at: datetime


def _local(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M}"


def _ssh(reservation: Reservation) -> str:
    return f"ssh -p {reservation.forward_port} root@{reservation.host.address or reservation.host.name}"


def _about(reservation: Reservation, *, kind: str, instant: datetime, title: str, body: str) -> Notice:
    return Notice(
        user_id=reservation.user_id,
        kind=kind,
        key=f"{kind}:reservation-{reservation.pk}:{instant.isoformat()}",
        title=title,
        body=body,
        link=reverse("reservation-detail", kwargs={"pk": reservation.pk}),
        at=instant,
    )


def _reservation_notices(*, now: datetime, since: datetime, ending_within: timedelta) -> Iterator[Notice]:
    # Bookings only: a job's container is told about once, when the job finishes.
    rows = Reservation.objects.bookings().select_related("host", "user")
    for r in rows.filter(status=Status.RUNNING, started_at__gte=since):
        with translation.override(r.user.preferred_language):
            notice = _about(
                r,
                kind=NotificationKind.RUNNING,
                instant=r.started_at,
                title=_("Your container on %(host)s is running") % {"host": r.host.name},
                body=_("Connect with: %(ssh)s\nIt runs until %(end)s.")
                % {"ssh": _ssh(r), "end": _local(r.end)},
            )
        yield notice
    ending = rows.filter(
        status__in=(Status.STARTING, Status.RUNNING), end__gt=now, end__lte=now + ending_within
    )
    for r in ending:
        with translation.override(r.user.preferred_language):
            notice = _about(
                r,
                kind=NotificationKind.ENDING_SOON,
                instant=r.end,
                title=_("Your reservation on %(host)s ends at %(end)s")
                % {"host": r.host.name, "end": _local(r.end)},
                body=_(
                    "Its container is removed then. Save your work to ~/Work or ~/Backup, "
                    "or extend the reservation."
                ),
            )
        yield notice
    # A release is the user's own act; only ends that came by the clock are news, and
    # stops and cancels by someone else (a maintainer, a drain, an idle release), which
    # say why in the status message.
    for r in rows.filter(status=Status.ENDED, ended_at__gte=since, released_at__isnull=True):
        with translation.override(r.user.preferred_language):
            notice = _about(
                r,
                kind=NotificationKind.ENDED,
                instant=r.ended_at,
                title=_("Your reservation on %(host)s has ended") % {"host": r.host.name},
                body=_("Its container was removed at %(at)s.") % {"at": _local(r.ended_at)},
            )
        yield notice
    stopped = rows.filter(status=Status.ENDED, released_at__gte=since).exclude(status_message="")
    for r in stopped:
        with translation.override(r.user.preferred_language):
            removed = (
                " " + _("Its container was removed at %(at)s.") % {"at": _local(r.released_at)}
                if r.started_at
                else ""
            )
            notice = _about(
                r,
                kind=NotificationKind.STOPPED,
                instant=r.released_at,
                title=_("Your reservation on %(host)s was stopped") % {"host": r.host.name},
                body=r.status_message + removed,
            )
        yield notice
    cancelled = rows.filter(status=Status.CANCELLED, cancelled_at__gte=since).exclude(status_message="")
    for r in cancelled:
        with translation.override(r.user.preferred_language):
            notice = _about(
                r,
                kind=NotificationKind.STOPPED,
                instant=r.cancelled_at,
                title=_("Your reservation on %(host)s from %(start)s was cancelled")
                % {"host": r.host.name, "start": _local(r.start)},
                body=r.status_message + " " + _("Book another window or host on the portal."),
            )
        yield notice
    for r in rows.filter(status=Status.BLOCKED, updated_at__gte=since):
        with translation.override(r.user.preferred_language):
            notice = _about(
                r,
                kind=NotificationKind.BLOCKED,
                instant=r.start,
                title=_("Your container on %(host)s cannot start") % {"host": r.host.name},
                body=r.status_message or _("The launch is blocked; see the reservation's events."),
            )
        yield notice
    for r in rows.filter(status=Status.FAILED, ended_at__gte=since):
        with translation.override(r.user.preferred_language):
            notice = _about(
                r,
                kind=NotificationKind.FAILED,
                instant=r.ended_at,
                title=_("Your container on %(host)s failed to start") % {"host": r.host.name},
                body=r.status_message or _("See the reservation's events."),
            )
        yield notice
    idle = rows.filter(status=Status.RUNNING, gpu_status__idle_flagged_at__gte=since).select_related(
        "gpu_status"
    )
    for r in idle:
        flagged = r.gpu_status.idle_flagged_at
        with translation.override(r.user.preferred_language):
            notice = _about(
                r,
                kind=NotificationKind.IDLE,
                instant=flagged,
                title=_("Your GPUs on %(host)s are idle") % {"host": r.host.name},
                body=_(
                    "They have been idle since %(since)s. Release the reservation if you are done, "
                    "so others can use them."
                )
                % {"since": _local(flagged)},
            )
        yield notice


def _event_notices(*, since: datetime) -> Iterator[Notice]:
    events = ContainerEvent.objects.filter(
        created_at__gte=since, sign__in=(ENGINE_DOWN_SIGN, GPU_DUPLICATE_SIGN, JOB_FINISHED_SIGN)
    ).select_related("host", "user")
    events = list(events.order_by("created_at", "id"))
    maintainers: list[tuple[int, str]] | None = None
    for event in events:
        if event.sign == JOB_FINISHED_SIGN:
            if event.user_id is None:
                continue
            number = JOB_NUMBER.search(event.message)
            link = (
                reverse("job-detail", kwargs={"pk": int(number.group(1))}) if number else reverse("dashboard")
            )
            with translation.override(event.user.preferred_language):
                title, body = _("Your job has finished"), event.sentence()
            yield Notice(
                user_id=event.user_id,
                kind=NotificationKind.JOB_FINISHED,
                key=f"{NotificationKind.JOB_FINISHED}:event-{event.pk}",
                title=title,
                body=body,
                link=link,
                at=event.created_at,
            )
            continue
        if maintainers is None:
            maintainers = [
                (pk, language or settings.LANGUAGE_CODE)
                for pk, language in User.objects.filter(is_staff=True, is_active=True).values_list(
                    "pk", "language"
                )
            ]
        kind = (
            NotificationKind.ENGINE_DOWN if event.sign == ENGINE_DOWN_SIGN else NotificationKind.GPU_DUPLICATE
        )
        for user_id, language in maintainers:
            with translation.override(language):
                where = event.host.name if event.host else _("a host")
                title = (
                    _("Engine down on %(host)s") % {"host": where}
                    if kind == NotificationKind.ENGINE_DOWN
                    else _("GPU used twice on %(host)s") % {"host": where}
                )
            # Maintainers read the raw line, as in the monitor log.
            yield Notice(
                user_id=user_id,
                kind=kind,
                key=f"{kind}:event-{event.pk}:user-{user_id}",
                title=title,
                body=event.as_log_line(),
                link=reverse("admin:containers_containerevent_change", args=[event.pk]),
                at=event.created_at,
            )


def _job_notices(*, now: datetime, since: datetime, near_limit_within: timedelta) -> Iterator[Notice]:
    """A job started, and a running job whose time limit is near: once per job (the key
    names the job, not an instant)."""
    from jobs.models import Job  # jobs sits below the lifecycle; read here only

    started = Job.objects.filter(
        reservation__status=Status.RUNNING, reservation__started_at__gte=since
    ).select_related("user", "reservation__host")
    for job in started:
        with translation.override(job.user.preferred_language):
            title = _("Job #%(job)s has started on %(host)s") % {
                "job": job.pk,
                "host": job.reservation.host.name,
            }
            body = _("It runs until %(end)s at the latest (its time limit of %(minutes)s minutes).") % {
                "end": _local(job.reservation.end),
                "minutes": job.time_limit_minutes,
            }
        yield _about_job(
            job, kind=NotificationKind.JOB_STARTED, title=title, body=body, at=job.reservation.started_at
        )
    if near_limit_within <= timedelta(0):
        return
    near = Job.objects.filter(
        status__in=Job.ACTIVE_STATUSES,
        reservation__status__in=(Status.STARTING, Status.RUNNING),
        reservation__end__gt=now,
        reservation__end__lte=now + near_limit_within,
    ).select_related("user", "reservation__host")
    for job in near:
        with translation.override(job.user.preferred_language):
            title = _("Job #%(job)s reaches its time limit at %(end)s") % {
                "job": job.pk,
                "end": _local(job.reservation.end),
            }
            body = _(
                "It is stopped then. Save what it needs to $JOB_OUTPUT (~/Work/jobs/%(job)s) before that."
            ) % {"job": job.pk}
        yield _about_job(job, kind=NotificationKind.JOB_NEAR_LIMIT, title=title, body=body, at=now)


def _about_job(job, *, kind: str, title: str, body: str, at: datetime) -> Notice:
    return Notice(
        user_id=job.user_id,
        kind=kind,
        key=f"{kind}:job-{job.pk}",
        title=title,
        body=body,
        link=reverse("job-detail", kwargs={"pk": job.pk}),
        at=at,
    )


def notices_due(
    *,
    now: datetime,
    since: datetime,
    ending_within: timedelta,
    job_near_limit_within: timedelta = timedelta(0),
) -> list[Notice]:
    """Everything that happened in [since, now] worth telling someone, every running
    reservation ending within `ending_within`, and every running job reaching its time
    limit within `job_near_limit_within` (none when zero)."""
    return [
        *_reservation_notices(now=now, since=since, ending_within=ending_within),
        *_event_notices(since=since),
        *_job_notices(now=now, since=since, near_limit_within=job_near_limit_within),
    ]
