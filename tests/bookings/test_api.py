from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from bookings.models import Reservation
from bookings.services import NOT_ENOUGH_CAPACITY, OVER_MAXIMUM
from bookings.timeslots import SLOT, slot_floor
from containers.models import Image
from tests.api_helpers import assert_error_shape, token_client
from tests.factories import ImageFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db


def next_slot(hours: int = 0):
    return slot_floor(timezone.now()) + SLOT + timedelta(hours=hours)


@pytest.fixture
def api(student):
    return token_client(student)


def book(api, host, **overrides):
    data = {"host": host.name, "start": "now", "end": "1-day", "cpus": 2, "memory_gb": 8, "gpu_count": 1}
    return api.post("/api/v1/reservations/", data | overrides, format="json")


def test_it_books_with_the_forms_inputs_now_and_n_day(api, student, host):
    response = book(api, host)
    assert response.status_code == 201, response.json()
    body = response.json()
    reservation = Reservation.objects.get(pk=body["id"])
    assert reservation.user == student and reservation.gpu_count == 1
    assert reservation.end - reservation.start == timedelta(days=1)
    assert body["gpu_indices"] == [0] and body["ssh_command"].startswith(f"ssh -p {student.forward_port} ")


def test_it_books_an_iso_window_and_a_local_one(api, host):
    start = next_slot(2)
    iso = book(api, host, start=start.isoformat(), end=(start + timedelta(hours=3)).isoformat())
    assert iso.status_code == 201, iso.json()
    later = timezone.localtime(start + timedelta(hours=4))
    local = book(api, host, start=f"{later:%Y %m %d %H %M}", end="1-day", gpu_count=0)
    assert local.status_code == 201, local.json()


def test_it_answers_the_pages_messages_in_one_error_shape(api, host):
    over = book(api, host, gpu_count=5)
    assert over.status_code == 400
    assert_error_shape(over.json())
    assert over.json()["errors"]["gpu_count"][0].startswith(OVER_MAXIMUM)
    wrong = book(api, host, end="15-day")
    assert wrong.status_code == 400
    assert wrong.json()["errors"]["end"][0].startswith("Wrong Input!")


def test_it_refuses_a_gpu_taken_for_part_of_the_window(api, host):
    other = UserFactory(username="other")
    start = next_slot(1)
    gpus = list(host.gpus.order_by("index"))
    ReservationFactory(user=other, host=host, start=start, end=start + timedelta(hours=2), gpus=gpus)
    response = book(api, host, start=start.isoformat(), end="1-day")
    assert response.status_code == 400
    assert response.json()["detail"] == NOT_ENOUGH_CAPACITY
    assert response.json()["code"] == "no_capacity"


def test_bad_shapes_are_400_never_500(api, host):
    for data in (
        {},
        {"host": "nope", "start": "now", "end": "1-day", "cpus": 1, "memory_gb": 1},
        {"host": host.name, "start": "tomorrow", "end": "1-day", "cpus": 1, "memory_gb": 1},
        {"host": host.name, "start": "now", "end": "1-day", "cpus": "x", "memory_gb": 1},
        {"host": host.name, "start": "now", "end": "1-day", "cpus": 1, "memory_gb": 10**30},
        {
            "host": host.name,
            "start": "now",
            "end": "1-day",
            "cpus": 1,
            "memory_gb": 1,
            "extra_command": "a\x00",
        },
        {"host": host.name, "start": "0001-01-01T00:00", "end": "1-day", "cpus": 1, "memory_gb": 1},
    ):
        response = api.post("/api/v1/reservations/", data, format="json")
        assert response.status_code == 400, (data, response.content)
        assert_error_shape(response.json())


def test_the_list_is_own_paginated_and_filtered(api, student, host):
    other = UserFactory(username="other")
    start = next_slot(3)
    mine = ReservationFactory(user=student, host=host, start=start, end=start + timedelta(hours=1))
    ReservationFactory(
        user=student,
        host=host,
        start=start - timedelta(days=3),
        end=start - timedelta(days=2),
        status=Reservation.Status.ENDED,
    )
    ReservationFactory(user=other, host=host, start=start, end=start + timedelta(hours=1))
    everything = api.get("/api/v1/reservations/").json()
    assert everything["count"] == 2
    scheduled = api.get("/api/v1/reservations/?status=scheduled").json()
    assert [row["id"] for row in scheduled["results"]] == [mine.pk]
    recent = api.get("/api/v1/reservations/", {"after": (start - timedelta(days=1)).isoformat()}).json()
    assert [row["id"] for row in recent["results"]] == [mine.pk]
    paged = api.get("/api/v1/reservations/?page_size=1").json()
    assert len(paged["results"]) == 1 and paged["next"]
    bad = api.get("/api/v1/reservations/?status=sleeping")
    assert bad.status_code == 400 and "Unknown status sleeping" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("post", "cancel/"), ("post", "release/"), ("post", "extend/"), ("post", "restart/")],
)
def test_another_users_reservation_answers_404(api, host, method, suffix):
    theirs = ReservationFactory(user=UserFactory(username="other"), host=host, start=next_slot(2))
    response = getattr(api, method)(
        f"/api/v1/reservations/{theirs.pk}/{suffix}", {"end": "2-day"}, format="json"
    )
    assert response.status_code == 404
    assert_error_shape(response.json())
    theirs.refresh_from_db()
    assert theirs.status == Reservation.Status.SCHEDULED


def test_cancel_extend_and_release_follow_the_pages_rules(api, student, host):
    start = next_slot(2)
    upcoming = ReservationFactory(user=student, host=host, start=start, end=start + timedelta(hours=2))
    extended = api.post(f"/api/v1/reservations/{upcoming.pk}/extend/", {"end": "1-day"}, format="json")
    assert extended.status_code == 200, extended.json()
    assert (
        extended.json()["end"]
        == (start + timedelta(days=1)).astimezone(timezone.get_current_timezone()).isoformat()
    )
    cancelled = api.post(f"/api/v1/reservations/{upcoming.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = api.post(f"/api/v1/reservations/{upcoming.pk}/release/")
    assert (
        again.status_code == 400 and again.json()["detail"] == "Only a running reservation can be released."
    )
    running = ReservationFactory(
        user=student,
        host=host,
        start=slot_floor(timezone.now()) - SLOT,
        end=next_slot(1),
        status=Reservation.Status.RUNNING,
    )
    released = api.post(f"/api/v1/reservations/{running.pk}/release/")
    assert released.status_code == 200 and released.json()["status"] == "ended"


def test_a_restart_is_asked_of_a_running_reservation_only(api, student, host):
    running = ReservationFactory(
        user=student,
        host=host,
        start=slot_floor(timezone.now()) - SLOT,
        end=next_slot(1),
        status=Reservation.Status.RUNNING,
    )
    assert api.post(f"/api/v1/reservations/{running.pk}/restart/").json()["restart_requested"] is True
    upcoming = ReservationFactory(user=student, host=host, start=next_slot(3), end=next_slot(4))
    refused = api.post(f"/api/v1/reservations/{upcoming.pk}/restart/")
    assert refused.status_code == 400 and refused.json()["code"] == "not_running"


def test_hosts_show_free_capacity_over_a_window(api, student, host):
    ReservationFactory(
        user=UserFactory(username="other"),
        host=host,
        start=next_slot(1),
        end=next_slot(5),
        cpus=4,
        memory_gb=10,
        gpus=[host.gpus.get(index=0)],
    )
    [row] = api.get("/api/v1/hosts/", {"start": next_slot(2).isoformat(), "end": "1-day"}).json()
    assert row["name"] == host.name
    assert row["free"] == {"cpus": 12.0, "memory_gb": 70, "gpus": 1}
    assert row["your_maximum"] == {"cpus": 8.0, "memory_gb": 32, "gpus": 1}
    assert api.get("/api/v1/hosts/", {"end": "20-day"}).status_code == 400


def test_earliest_fit_finds_the_window_after_a_busy_gpu(api, host):
    gpus = list(host.gpus.all())
    taken_until = next_slot(3)
    ReservationFactory(
        user=UserFactory(username="other"), host=host, start=next_slot(-1), end=taken_until, gpus=gpus
    )
    query = {"cpus": 1, "memory_gb": 1, "gpu_count": 1, "end": "1-day"}
    body = api.get("/api/v1/earliest-fit/", query | {"host": host.name}).json()
    assert body["found"] is True and body["host"] == host.name
    assert body["start"] == taken_until.astimezone(timezone.get_current_timezone()).isoformat()
    assert api.get("/api/v1/earliest-fit/", query).json()["start"] == body["start"]
    unknown = api.get("/api/v1/earliest-fit/", query | {"host": "nowhere"})
    assert unknown.status_code == 400 and unknown.json()["errors"]["host"] == ["Unknown host."]


def test_earliest_fit_refuses_what_the_users_maxima_would_refuse_at_booking(api, host):
    # The default profile allows 1 GPU: a window for 2 would only be refused when booked.
    query = {"cpus": 1, "memory_gb": 1, "gpu_count": 2, "end": "1-day"}
    response = api.get("/api/v1/earliest-fit/", query)
    assert response.status_code == 400
    assert "Over the maximum required" in str(response.json())


def test_the_image_list_offers_only_images_a_booking_may_use(api, image):
    ImageFactory(reference="rober5566a/aivc-server:latest", login=Image.Login.PASSWORD)
    ImageFactory(reference="lab/retired:1", is_active=False)
    assert [row["reference"] for row in api.get("/api/v1/images/").json()] == [image.reference]


def test_the_timeline_names_holders_but_never_their_commands(api, student, host):
    other = UserFactory(username="other")
    ReservationFactory(
        user=other,
        host=host,
        start=next_slot(1),
        end=next_slot(3),
        extra_command="--secret-flag",
        gpus=[host.gpus.get(index=1)],
    )
    response = api.get("/api/v1/timeline/")
    assert response.status_code == 200
    [row] = response.json()["hosts"]
    blocks = row["gpus"][1]["blocks"]
    assert blocks[0]["username"] == "other" and blocks[0]["reservation_id"] is None
    assert "secret-flag" not in response.content.decode()
    assert api.get("/api/v1/timeline/?host=abc").status_code == 400


def test_reports_are_csv_for_staff_and_403_for_students(api, student, host):
    staff = UserFactory(username="staffer", is_staff=True)
    query = {"from": "2026-01-01", "to": "2026-01-31"}
    assert api.get("/api/v1/reports/usage.csv", query).status_code == 403
    staff_api = token_client(staff)
    for name in ("usage", "reservations"):
        response = staff_api.get(f"/api/v1/reports/{name}.csv", query)
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        assert b"".join(response.streaming_content).count(b"\n") >= 1
    bad = staff_api.get("/api/v1/reports/usage.csv", {"from": "2026-02-01", "to": "2026-01-01"})
    assert bad.status_code == 400
    assert_error_shape(bad.json())


def test_images_list_only_active_ones(api, image):
    references = [row["reference"] for row in api.get("/api/v1/images/").json()]
    assert references == [image.reference]


def test_wrong_methods_answer_405_in_the_error_shape(api):
    response = api.delete("/api/v1/timeline/")
    assert response.status_code == 405
    assert_error_shape(response.json())


def test_session_users_reach_the_api_too(student, host):
    client = APIClient()
    client.force_login(student)
    assert client.get("/api/v1/reservations/").status_code == 200


def test_the_timeline_lists_the_holds_without_a_gpu_and_hides_anothers_job(api, student, host):
    ReservationFactory(user=student, host=host, start=next_slot(1), end=next_slot(3))
    ReservationFactory(
        user=UserFactory(username="other"), host=host, start=next_slot(2), end=next_slot(4), kind="job"
    )
    [row] = api.get("/api/v1/timeline/").json()["hosts"]
    assert [(block["username"], block["own"]) for block in row["cpu_only"]] == [
        (student.username, True),
        ("", False),
    ]
