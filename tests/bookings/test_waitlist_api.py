"""The waitlist API: list, create, withdraw, only one's own."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from bookings.models import Reservation, WaitlistEntry
from bookings.timeslots import SLOT, slot_floor
from bookings.waitlist_services import waitlist_book_due
from tests.api_helpers import assert_error_shape, token_client
from tests.factories import HostFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db


def next_slot(hours: int = 0):
    return slot_floor(timezone.now()) + SLOT + timedelta(hours=hours)


@pytest.fixture
def api(student):
    return token_client(student)


@pytest.fixture
def one_gpu(db):
    return HostFactory(name="gpu-one", gpus=1)


@pytest.fixture
def taken(one_gpu):
    start = slot_floor(timezone.now())
    return ReservationFactory(
        user=UserFactory(),
        host=one_gpu,
        start=start,
        end=start + timedelta(days=1),
        gpus=list(one_gpu.gpus.all()),
    )


def wait(api, on, **overrides):
    data = {
        "host": on.name,
        "start": next_slot(2).isoformat(),
        "end": "1-day",
        "cpus": 2,
        "memory_gb": 8,
        "gpu_count": 1,
    }
    return api.post("/api/v1/waitlist/", data | overrides, format="json")


def test_a_request_that_does_not_fit_waits_and_is_listed(api, student, one_gpu, taken):
    response = wait(api, one_gpu)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "waiting" and body["mode"] == "window" and body["host"] == "gpu-one"
    assert body["duration_minutes"] == 24 * 60 and body["reservation_id"] is None
    listed = api.get("/api/v1/waitlist/").json()
    assert [row["id"] for row in listed["results"]] == [body["id"]]
    assert not Reservation.objects.filter(user=student).exists()


def test_the_first_window_after_on_any_host_is_booked_by_the_tick(api, student, one_gpu, taken):
    response = wait(api, one_gpu, host=None, mode="first_after", start="now", latest_start="3-day")
    assert response.status_code == 201, response.json()
    assert response.json()["host"] is None

    waitlist_book_due(now=timezone.now())

    body = api.get(f"/api/v1/waitlist/{response.json()['id']}/").json()
    assert body["status"] == "booked"
    booked = Reservation.objects.get(pk=body["reservation_id"])
    assert booked.start == taken.end and booked.user == student


def test_bad_input_answers_400_in_the_error_shape_and_stores_nothing(api, one_gpu):
    past = (slot_floor(timezone.now()) - timedelta(hours=1)).isoformat()
    for overrides in (
        {"end": (next_slot(1)).isoformat()},  # end before start
        {"mode": "first_after", "latest_start": past},
        {"gpu_count": -3},
        {"mode": "whenever"},
        {"cpus": "lots"},
    ):
        response = wait(api, one_gpu, **overrides)
        assert response.status_code == 400, overrides
        assert_error_shape(response.json())
    assert not WaitlistEntry.objects.exists()


def test_the_owner_withdraws_and_a_second_withdraw_is_refused(api, one_gpu, taken):
    entry_id = wait(api, one_gpu).json()["id"]
    response = api.post(f"/api/v1/waitlist/{entry_id}/withdraw/")
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    again = api.post(f"/api/v1/waitlist/{entry_id}/withdraw/")
    assert again.status_code == 400 and again.json()["code"] == "not_waiting"


def test_another_users_request_is_404(api, one_gpu, taken, default_profile):
    entry_id = wait(api, one_gpu).json()["id"]
    other = token_client(UserFactory(username="other"), name="other")
    assert other.get(f"/api/v1/waitlist/{entry_id}/").status_code == 404
    assert other.post(f"/api/v1/waitlist/{entry_id}/withdraw/").status_code == 404
    assert other.get("/api/v1/waitlist/").json()["results"] == []
    assert WaitlistEntry.objects.get(pk=entry_id).status == "waiting"


def test_anonymous_is_refused_and_wrong_methods_are_405(api, one_gpu, taken):
    assert APIClient().get("/api/v1/waitlist/").status_code in (401, 403)
    entry_id = wait(api, one_gpu).json()["id"]
    assert api.delete(f"/api/v1/waitlist/{entry_id}/").status_code == 405
    assert api.get(f"/api/v1/waitlist/{entry_id}/withdraw/").status_code == 405
