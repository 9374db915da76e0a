from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from icalendar import Calendar

from accounts.channel_services import calendar_feed_reset, calendar_feed_token
from tests.factories import ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db


def feed_url(user) -> str:
    return reverse("calendar-feed", kwargs={"token": calendar_feed_token(user=user)})


def test_the_feed_lists_the_users_reservations_without_a_login(client, student, host):
    start = timezone.now().replace(microsecond=0) + timedelta(hours=2)
    mine = ReservationFactory(user=student, host=host, start=start, end=start + timedelta(hours=5))
    ReservationFactory(
        user=UserFactory(username="other"), host=host, start=start, end=start + timedelta(hours=1)
    )
    response = client.get(feed_url(student))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/calendar")
    events = Calendar.from_ical(response.content).walk("VEVENT")
    assert [str(event["uid"]) for event in events] == [f"reservation-{mine.pk}@aivc-portal"]
    assert events[0].decoded("dtstart") == mine.start
    assert f"ssh -p {student.forward_port}" in str(events[0]["description"])


def test_a_reset_feed_url_stops_working(client, student):
    old = feed_url(student)
    calendar_feed_reset(user=student)
    assert client.get(old).status_code == 404
    assert client.get(feed_url(student)).status_code == 200


@pytest.mark.parametrize("token", ["1.abc", "x.y", "99999999999999999999.0", "nothing"])
def test_a_guessed_feed_url_answers_404(client, student, token):
    calendar_feed_token(user=student)
    assert client.get(reverse("calendar-feed", kwargs={"token": token})).status_code == 404


def test_another_users_id_with_my_digest_answers_404(client, student):
    other = UserFactory(username="other")
    calendar_feed_token(user=other)
    mine = calendar_feed_token(user=student)
    forged = f"{other.pk}.{mine.partition('.')[2]}"
    assert client.get(reverse("calendar-feed", kwargs={"token": forged})).status_code == 404


def test_the_profile_page_shows_the_feed_url_and_resets_it(client, student):
    client.force_login(student)
    first = client.get(reverse("profile")).context["calendar_url"]
    assert client.post(reverse("profile"), {"action": "calendar-reset"}).status_code == 302
    second = client.get(reverse("profile")).context["calendar_url"]
    assert first != second and second.endswith(".ics")
