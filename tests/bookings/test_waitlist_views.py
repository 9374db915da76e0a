"""The waitlist's pages: the offer on a refused booking, joining, my list, withdrawing."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bookings.models import WaitlistEntry
from bookings.timeslots import SLOT, slot_floor
from tests.factories import HostFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db


def next_slot(hours: int = 0):
    return slot_floor(timezone.now()) + SLOT + timedelta(hours=hours)


@pytest.fixture
def one_gpu(db):
    return HostFactory(name="gpu-one", gpus=1)


@pytest.fixture
def taken(one_gpu):
    """Someone else holds the only GPU for the next two days."""
    start = slot_floor(timezone.now())
    return ReservationFactory(
        user=UserFactory(),
        host=one_gpu,
        start=start,
        end=start + timedelta(days=2),
        gpus=list(one_gpu.gpus.all()),
    )


def booking_data(host, image, **overrides):
    start = timezone.localtime(next_slot(1))
    data = {
        "host": host.pk,
        "start_date": f"{start:%Y-%m-%d}",
        "start_time": f"{start:%H:%M}",
        "end_kind": "duration",
        "duration": "1-day",
        "cpus": "2",
        "memory_gb": "8",
        "gpu_count": "1",
        "image": image.pk,
        "extra_command": "",
    }
    return data | overrides


@pytest.fixture
def entry(student, one_gpu):
    start = next_slot(1)
    return WaitlistEntry.objects.create(
        user=student,
        host=one_gpu,
        earliest_start=start,
        latest_start=start,
        duration_minutes=60,
        cpus=1,
        memory_gb=1,
        gpu_count=1,
        created_at=timezone.now(),
    )


def test_a_booking_refused_for_capacity_offers_to_wait(client, student, one_gpu, image, taken):
    client.force_login(student)
    response = client.post(reverse("reservation-new"), booking_data(one_gpu, image))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="waitlist-offer"' in body
    assert reverse("waitlist-join") in body and 'value="window"' in body and 'value="first_after"' in body


def test_a_booking_refused_for_another_reason_offers_no_waitlist(client, student, one_gpu, image):
    client.force_login(student)
    response = client.post(reverse("reservation-new"), booking_data(one_gpu, image, gpu_count="5"))
    assert 'data-testid="waitlist-offer"' not in response.content.decode()


def test_joining_from_the_offer_waits_for_this_window(client, student, one_gpu, image, taken):
    client.force_login(student)
    response = client.post(
        reverse("waitlist-join"), booking_data(one_gpu, image, start_now="False", mode="window")
    )
    assert response.status_code == 302 and response.url == reverse("waitlist")
    entry = WaitlistEntry.objects.get(user=student)
    assert (
        entry.mode == "window" and entry.earliest_start == next_slot(1) and entry.duration_minutes == 24 * 60
    )
    page = client.get(reverse("waitlist"))
    assert f'data-testid="waitlist-entry-{entry.pk}"' in page.content.decode()


def test_joining_for_the_first_window_after_takes_a_latest_start(client, student, one_gpu, image, taken):
    client.force_login(student)
    latest = timezone.localtime(next_slot(1) + timedelta(days=3))
    data = booking_data(
        one_gpu, image, mode="first_after", latest_date=f"{latest:%Y-%m-%d}", latest_time=f"{latest:%H:%M}"
    )
    assert client.post(reverse("waitlist-join"), data).status_code == 302
    entry = WaitlistEntry.objects.get(user=student)
    assert entry.mode == "first_after" and entry.latest_start == latest


def test_a_latest_start_in_the_past_is_a_clear_error_and_the_form_keeps_its_values(
    client, student, one_gpu, image, taken
):
    client.force_login(student)
    past = timezone.localtime(slot_floor(timezone.now()) - timedelta(hours=2))
    data = booking_data(
        one_gpu, image, mode="first_after", latest_date=f"{past:%Y-%m-%d}", latest_time=f"{past:%H:%M}"
    )
    response = client.post(reverse("waitlist-join"), data)
    assert response.status_code == 200
    body = response.content.decode()
    assert "The latest start must be in the future." in body
    assert 'value="8"' in body  # what the user typed is still there
    assert not WaitlistEntry.objects.exists()


def test_the_owner_withdraws_a_waiting_request(client, student, entry):
    client.force_login(student)
    response = client.post(reverse("waitlist-withdraw", args=[entry.pk]))
    assert response.status_code == 302
    entry.refresh_from_db()
    assert entry.status == WaitlistEntry.Status.WITHDRAWN


def test_withdrawing_twice_is_a_message_not_an_error(client, student, entry):
    client.force_login(student)
    client.post(reverse("waitlist-withdraw", args=[entry.pk]))
    response = client.post(reverse("waitlist-withdraw", args=[entry.pk]), follow=True)
    assert "Only a waiting request can be withdrawn" in response.content.decode()


def test_another_users_request_is_404_and_stays_waiting(client, entry, default_profile):
    client.force_login(UserFactory(username="someone-else"))
    assert client.post(reverse("waitlist-withdraw", args=[entry.pk])).status_code == 404
    assert "waitlist-entry" not in client.get(reverse("waitlist")).content.decode()
    entry.refresh_from_db()
    assert entry.status == WaitlistEntry.Status.WAITING


@pytest.mark.parametrize(
    ("name", "args"), [("waitlist", []), ("waitlist-join", []), ("waitlist-withdraw", [1])]
)
def test_anonymous_users_go_to_the_login_page(client, name, args):
    response = (
        client.post(reverse(name, args=args)) if args or name != "waitlist" else client.get(reverse(name))
    )
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_wrong_methods_are_refused(client, student, entry):
    client.force_login(student)
    assert client.get(reverse("waitlist-withdraw", args=[entry.pk])).status_code == 405
    assert client.get(reverse("waitlist-join")).status_code == 405
    assert client.post(reverse("waitlist")).status_code == 405
    entry.refresh_from_db()
    assert entry.status == WaitlistEntry.Status.WAITING


def test_the_offer_posts_the_refused_booking_back_unchanged(client, student, one_gpu, image, taken):
    """What the offer's hidden fields carry is the booking the user typed, field for field."""
    client.force_login(student)
    typed = booking_data(
        one_gpu, image, cpus="3", memory_gb="6", duration="2-day", extra_command="--epochs 3"
    )
    refused = client.post(reverse("reservation-new"), typed).content.decode()
    offer = refused.split('data-testid="waitlist-offer"')[1].split("</form>")[0]
    carried = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', offer))

    response = client.post(reverse("waitlist-join"), carried | {"mode": "window"})

    assert response.status_code == 302
    entry = WaitlistEntry.objects.get(user=student)
    assert (entry.cpus, entry.memory_gb, entry.gpu_count, entry.extra_command) == (3, 6, 1, "--epochs 3")
    assert entry.earliest_start == next_slot(1) and entry.duration_minutes == 2 * 24 * 60
    assert entry.host == one_gpu and entry.image == image
