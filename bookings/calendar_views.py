"""Each user's reservations (and jobs, where the jobs app is installed) as an iCalendar
feed at a secret URL (accounts.channel_services), for their calendar app."""

from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_safe
from icalendar import Calendar, Event

from accounts.channel_services import calendar_feed_user
from bookings.models import Reservation
from bookings.serializers import ssh_command
from bookings.templatetags.bookings_extras import status_label

# How far back the feed reaches: enough for "what did I run last month", small enough to stay quick.
FEED_HISTORY = timedelta(days=60)
FEED_LIMIT = 500
NOT_HAPPENING = (Reservation.Status.CANCELLED, Reservation.Status.FAILED)


def _reservation_event(reservation: Reservation, *, stamp: datetime) -> Event:
    event = Event()
    gpus = ngettext("%(count)d GPU", "%(count)d GPUs", reservation.gpu_count) % {
        "count": reservation.gpu_count
    }
    event.add("uid", f"reservation-{reservation.pk}@aivc-portal")
    event.add("dtstamp", stamp)
    event.add("dtstart", reservation.start)
    event.add("dtend", reservation.end)
    event.add(
        "summary",
        _("%(host)s: %(gpus)s, %(cpus)s CPUs")
        % {"host": reservation.host.name, "gpus": gpus, "cpus": f"{reservation.cpus:g}"},
    )
    event.add(
        "description",
        _("Status: %(status)s\nMemory: %(memory)s GB\nConnect: %(ssh)s")
        % {
            "status": status_label(reservation.status),
            "memory": reservation.memory_gb,
            "ssh": ssh_command(reservation),
        },
    )
    event.add("location", reservation.host.address or reservation.host.name)
    event.add("url", settings.PORTAL_URL + reverse("reservation-detail", kwargs={"pk": reservation.pk}))
    event.add("status", "CANCELLED" if reservation.status in NOT_HAPPENING else "CONFIRMED")
    return event


def _job_events(user_id: int, *, since: datetime, stamp: datetime) -> list[Event]:
    """Running and finished jobs of the user, when the jobs app exists (it sits above
    bookings, so it is looked up by name, never imported)."""
    if not apps.is_installed("jobs"):
        return []
    job_model = apps.get_model("jobs", "Job")
    jobs = job_model.objects.filter(user_id=user_id, started_at__isnull=False, started_at__gte=since)
    events = []
    for job in jobs.order_by("-started_at")[:FEED_LIMIT]:
        event = Event()
        end = job.finished_at or job.started_at + timedelta(minutes=job.time_limit_minutes)
        event.add("uid", f"job-{job.pk}@aivc-portal")
        event.add("dtstamp", stamp)
        event.add("dtstart", job.started_at)
        event.add("dtend", max(end, job.started_at + timedelta(minutes=1)))
        event.add(
            "summary", _("Job #%(id)s (%(status)s)") % {"id": job.pk, "status": job.get_status_display()}
        )
        events.append(event)
    return events


@require_safe
def calendar_feed(request: HttpRequest, token: str) -> HttpResponse:
    user = calendar_feed_user(token=token)
    if user is None:
        raise Http404
    # The entries are written in the owner's language, whoever's app fetches the feed.
    with translation.override(user.preferred_language):
        return _feed(user)


def _feed(user) -> HttpResponse:
    now = timezone.now()
    since = now - FEED_HISTORY
    calendar = Calendar()
    calendar.add("prodid", "-//AIVC Portal//reservations//EN")
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", f"{settings.SITE_NAME}: {user.username}")
    reservations = (
        Reservation.objects.bookings()
        .filter(user=user, end__gte=since)
        .select_related("host")
        .order_by("-start")[:FEED_LIMIT]
    )
    for reservation in reservations:
        calendar.add_component(_reservation_event(reservation, stamp=now))
    for event in _job_events(user.pk, since=since, stamp=now):
        calendar.add_component(event)
    response = HttpResponse(calendar.to_ical(), content_type="text/calendar; charset=utf-8")
    response["Cache-Control"] = "private, max-age=300"
    return response
