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


def test_the_entries_are_written_in_the_owners_language(client, student, host):
    student.language = "zh-hant"
    student.save()
    start = timezone.now().replace(microsecond=0) + timedelta(hours=2)
    ReservationFactory(user=student, host=host, start=start, end=start + timedelta(hours=5), gpu_count=2)
    [event] = Calendar.from_ical(client.get(feed_url(student)).content).walk("VEVENT")
    assert "2 張 GPU" in str(event["summary"])
    assert "狀態：已排程" in str(event["description"])
    assert "連線：ssh -p" in str(event["description"])


def test_an_english_owners_entries_stay_english_for_a_zh_hant_browser(client, student, host):
    student.language = "en"
    student.save()
    start = timezone.now().replace(microsecond=0) + timedelta(hours=2)
    ReservationFactory(user=student, host=host, start=start, end=start + timedelta(hours=5), gpu_count=1)
    response = client.get(feed_url(student), HTTP_ACCEPT_LANGUAGE="zh-hant")
    [event] = Calendar.from_ical(response.content).walk("VEVENT")
    assert f"{host.name}: 1 GPU" in str(event["summary"])
    assert "Status: " in str(event["description"])
