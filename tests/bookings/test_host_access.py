"""A maintainer restricts a host to some users and profiles: one rule, kept by the booking
service, the form, the extension and the suggestion alike."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from bookings.models import HostAccess, Reservation
from bookings.selectors import hosts_open_to
from bookings.services import reservation_create, reservation_extend
from bookings.timeslots import SLOT, slot_floor
from tests.api_helpers import token_client
from tests.conftest import NOW
from tests.factories import CapabilityProfileFactory, HostFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db


@pytest.fixture
def a100(db):
    return HostFactory(name="a100", cpus=32, ram_gb=256, gpus=4)


def restrict(host, *, users=(), profiles=()) -> HostAccess:
    access = HostAccess.objects.create(host=host)
    access.users.set(users)
    access.profiles.set(profiles)
    return access


def book(user, host):
    return reservation_create(
        user=user,
        host=host,
        start=local(2026, 3, 3, 9),
        end="1-day",
        cpus=1,
        memory_gb=1,
        gpu_count=0,
        now=NOW,
    )


def test_an_unrestricted_host_is_open_to_everyone(student, host, a100):
    assert list(hosts_open_to(user=student)) == [a100, host]


def test_a_restricted_host_refuses_a_user_it_does_not_list(student, host, a100):
    restrict(a100, users=[UserFactory(username="project1")])

    with pytest.raises(ValidationError, match="a100 is reserved for some users"):
        book(student, a100)

    assert list(hosts_open_to(user=student)) == [host]


def test_a_listed_user_may_book_the_restricted_host(student, a100):
    restrict(a100, users=[student])

    assert book(student, a100).host == a100


def test_a_user_on_a_listed_profile_may_book_it_and_others_not(default_profile, image, a100):
    project = CapabilityProfileFactory(name="project", cpus=16, memory_gb=64, gpus=4)
    member, outsider = UserFactory(capability_profile=project), UserFactory()
    restrict(a100, profiles=[project])

    assert book(member, a100).host == a100
    with pytest.raises(ValidationError, match="reserved"):
        book(outsider, a100)


def test_listing_the_default_profile_opens_the_host_to_users_without_a_profile(
    student, default_profile, a100
):
    restrict(a100, profiles=[default_profile])

    assert a100 in hosts_open_to(user=student)


def test_a_restriction_that_lists_nobody_restricts_nothing(student, a100):
    restrict(a100)

    assert a100 in hosts_open_to(user=student)


def test_an_extension_on_a_host_restricted_meanwhile_is_refused(student, a100):
    reservation = ReservationFactory(
        user=student, host=a100, start=local(2026, 3, 3, 9), end=local(2026, 3, 3, 12)
    )
    restrict(a100, users=[UserFactory(username="project1")])

    with pytest.raises(ValidationError, match="reserved"):
        reservation_extend(reservation=reservation, end=local(2026, 3, 3, 15), now=NOW)


def test_the_booking_form_offers_only_the_hosts_open_to_the_user(client, student, host, a100):
    restrict(a100, users=[UserFactory()])
    client.force_login(student)

    page = client.get(reverse("reservation-new")).content.decode()

    assert f'value="{host.pk}"' in page
    assert f'value="{a100.pk}"' not in page


def test_a_posted_restricted_host_is_not_a_valid_choice_and_books_nothing(client, student, image, a100):
    restrict(a100, users=[UserFactory()])
    client.force_login(student)
    start = timezone.localtime(slot_floor(timezone.now()) + 2 * SLOT)
    data = {
        "host": a100.pk,
        "start_date": f"{start:%Y-%m-%d}",
        "start_time": f"{start:%H:%M}",
        "end_kind": "duration",
        "duration": "1-day",
        "cpus": "1",
        "memory_gb": "1",
        "gpu_count": "0",
        "image": image.pk,
        "extra_command": "",
    }

    response = client.post(reverse("reservation-new"), data)

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Reservation.objects.filter(host=a100).exists()


def test_the_api_earliest_fit_never_suggests_a_host_closed_to_the_user(student, host, a100):
    restrict(a100, users=[UserFactory(username="project1")])
    start = slot_floor(timezone.now()) + SLOT
    ReservationFactory(
        user=UserFactory(username="busy"),
        host=host,
        start=start - SLOT,
        end=start + 4 * SLOT,
        gpus=list(host.gpus.all()),
    )
    query = {"cpus": 1, "memory_gb": 1, "gpu_count": 1, "end": "1-day"}

    body = token_client(student).get("/api/v1/earliest-fit/", query).json()
    assert body["host"] == host.name
    assert (
        token_client(student).get("/api/v1/earliest-fit/", query | {"host": "a100"}).json()["found"] is False
    )
