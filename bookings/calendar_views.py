"""Each user's reservations (and jobs, where the jobs app is installed) as an iCalendar
feed at a secret URL (accounts.channel_services), for their calendar app."""

from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_safe
from icalendar import Calendar, Event

from accounts.channel_services import calendar_feed_user
from bookings.models import Reservation
from bookings.serializers import ssh_command

# How far back the feed reaches: enough for "what did I run last month", small enough to stay quick.
FEED_HISTORY = timedelta(days=60)
FEED_LIMIT = 500
NOT_HAPPENING = (Reservation.Status.CANCELLED, Reservation.Status.FAILED)


def _reservation_event(reservation: Reservation, *, stamp: datetime) -> Event:
    event = Event()
    gpus = f"{reservation.gpu_count} GPU" + ("s" if reservation.gpu_count != 1 else "")
    event.add("uid", f"reservation-{reservation.pk}@aivc-portal")
    event.add("dtstamp", stamp)
    event.add("dtstart", reservation.start)
    event.add("dtend", reservation.end)
    event.add("summary", f"{reservation.host.name}: {gpus}, {reservation.cpus:g} CPUs")
    event.add(
        "description",
        f"Status: {reservation.status}\n"
        f"Memory: {reservation.memory_gb} GB\n"
        f"Connect: {ssh_command(reservation)}",
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
        event.add("summary", f"Job #{job.pk} ({job.status})")
        events.append(event)
    return events


@require_safe
def calendar_feed(request: HttpRequest, token: str) -> HttpResponse:
    user = calendar_feed_user(token=token)
    if user is None:
        raise Http404
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
