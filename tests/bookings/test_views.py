from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import NOT_ENOUGH_CAPACITY, OVER_MAXIMUM
from bookings.timeslots import SLOT, slot_floor
from containers.models import ImagePresence, SpaceAudit
from tests.factories import ContainerEventFactory, HostFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db

USER_PAGES = ["dashboard", "reservation-new", "timeline", "profile", "reservation-capacity"]
RESERVATION_PAGES = ["reservation-detail", "reservation-cancel", "reservation-release", "reservation-extend"]


def next_slot(hours: int = 0):
    return slot_floor(timezone.now()) + SLOT + timedelta(hours=hours)


@pytest.fixture
def upcoming(student, host):
    start = next_slot(2)
    return ReservationFactory(user=student, host=host, start=start, end=start + timedelta(hours=3))


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


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


@pytest.mark.parametrize("name", USER_PAGES)
def test_a_signed_in_user_gets_each_page(client_for, student, host, name):
    assert client_for(student).get(reverse(name)).status_code == 200


@pytest.mark.parametrize("name", USER_PAGES)
def test_an_anonymous_visitor_is_sent_to_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


@pytest.mark.parametrize("name", USER_PAGES)
def test_a_wrong_method_is_refused(client_for, student, name):
    assert client_for(student).delete(reverse(name)).status_code == 405


@pytest.mark.parametrize("name", RESERVATION_PAGES)
def test_the_owner_gets_each_reservation_page(client_for, student, upcoming, name):
    response = client_for(student).get(reverse(name, args=[upcoming.pk]))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("name", "method"),
    [(name, "get") for name in RESERVATION_PAGES] + [(name, "post") for name in RESERVATION_PAGES[1:]],
)
def test_another_user_gets_404_for_each_reservation_page(client_for, upcoming, name, method):
    other = UserFactory(username="someone-else")
    response = getattr(client_for(other), method)(reverse(name, args=[upcoming.pk]))
    assert response.status_code == 404
    upcoming.refresh_from_db()
    assert upcoming.status == Reservation.Status.SCHEDULED


@pytest.mark.parametrize("name", RESERVATION_PAGES)
def test_an_anonymous_visitor_is_sent_to_login_from_reservation_pages(client, upcoming, name):
    response = client.get(reverse(name, args=[upcoming.pk]))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


@pytest.mark.parametrize("name", RESERVATION_PAGES)
def test_a_wrong_method_is_refused_on_reservation_pages(client_for, student, upcoming, name):
    assert client_for(student).put(reverse(name, args=[upcoming.pk])).status_code == 405


def test_booking_creates_a_reservation_and_shows_it(client_for, student, host, image):
    ImagePresence.objects.create(host=host, image=image, state=ImagePresence.State.PRESENT)
    response = client_for(student).post(reverse("reservation-new"), booking_data(host, image))
    reservation = Reservation.objects.get(user=student)
    assert response.status_code == 302
    assert response.url == reverse("reservation-detail", args=[reservation.pk])
    assert reservation.gpu_count == 1
    assert reservation.end - reservation.start == timedelta(days=1)
    page = client_for(student).get(response.url).content.decode()
    assert "Booking successful!" in page


def test_booking_now_starts_in_the_current_slot(client_for, student, host, image):
    data = booking_data(host, image, start_now="on", start_date="", start_time="")
    client_for(student).post(reverse("reservation-new"), data)
    reservation = Reservation.objects.get(user=student)
    assert reservation.start == slot_floor(timezone.now())


def test_an_over_maximum_request_shows_the_error_next_to_the_field(client_for, student, host, image):
    response = client_for(student).post(reverse("reservation-new"), booking_data(host, image, cpus="9"))
    assert response.status_code == 200
    assert OVER_MAXIMUM in " ".join(response.context["form"].errors["cpus"])
    assert not Reservation.objects.exists()


def test_a_start_in_the_past_is_wrong_input_on_the_start_field(client_for, student, host, image):
    past = timezone.localtime(slot_floor(timezone.now()) - timedelta(hours=2))
    data = booking_data(host, image, start_date=f"{past:%Y-%m-%d}", start_time=f"{past:%H:%M}")
    response = client_for(student).post(reverse("reservation-new"), data)
    assert "Wrong Input!" in " ".join(response.context["form"].errors["start_date"])


def test_a_full_window_offers_the_earliest_window_that_fits(client_for, student, host, image):
    start = next_slot(1)
    blocker = UserFactory(username="blocker")
    ReservationFactory(
        user=blocker,
        host=host,
        start=start - SLOT,
        end=start + timedelta(hours=5),
        gpus=list(host.gpus.all()),
    )
    response = client_for(student).post(reverse("reservation-new"), booking_data(host, image))
    assert NOT_ENOUGH_CAPACITY in response.context["form"].non_field_errors()
    suggestion = response.context["suggestion"]
    assert suggestion["start"] == timezone.localtime(start + timedelta(hours=5))
    assert suggestion["end"] - suggestion["start"] == timedelta(days=1)
    assert "The earliest window of the same length that fits" in response.content.decode()


def test_the_capacity_panel_shows_maxima_and_what_is_free(client_for, student, host, image):
    start = next_slot(1)
    ReservationFactory(
        host=host,
        start=start,
        end=start + timedelta(hours=2),
        cpus=4,
        memory_gb=10,
        gpus=[host.gpus.get(index=0)],
    )
    response = client_for(student).get(reverse("reservation-capacity"), booking_data(host, image))
    page = response.content.decode()
    assert "Your limits: 8 CPUs, 32 GiB memory (RAM + swap), 1 GPUs" in page
    assert response.context["free"].cpus == 12
    assert response.context["free"].memory_gb == 70
    assert response.context["free"].gpus == 1


def test_cancel_asks_first_then_cancels_on_post(client_for, student, upcoming):
    client = client_for(student)
    confirm = client.get(reverse("reservation-cancel", args=[upcoming.pk]))
    assert b"csrfmiddlewaretoken" in confirm.content
    upcoming.refresh_from_db()
    assert upcoming.status == Reservation.Status.SCHEDULED
    client.post(reverse("reservation-cancel", args=[upcoming.pk]))
    upcoming.refresh_from_db()
    assert upcoming.status == Reservation.Status.CANCELLED


def test_release_ends_a_started_reservation_now(client_for, student, host):
    start = slot_floor(timezone.now())
    running = ReservationFactory(
        user=student,
        host=host,
        start=start,
        end=start + timedelta(hours=4),
        status=Reservation.Status.RUNNING,
    )
    client_for(student).post(reverse("reservation-release", args=[running.pk]))
    running.refresh_from_db()
    assert running.released_at is not None
    assert running.end <= timezone.now()


def test_extend_moves_the_end_later(client_for, student, upcoming):
    old_end = upcoming.end
    client_for(student).post(reverse("reservation-extend", args=[upcoming.pk]), {"extend_by": "120"})
    upcoming.refresh_from_db()
    assert upcoming.end == old_end + timedelta(hours=2)


def test_a_refused_extension_shows_the_reason(client_for, student, upcoming, host):
    ReservationFactory(user=student, host=host, start=upcoming.end, end=upcoming.end + timedelta(hours=2))
    response = client_for(student).post(
        reverse("reservation-extend", args=[upcoming.pk]), {"extend_by": "60"}
    )
    assert "overlaps with your previous booking" in response.content.decode()


def test_the_dashboard_shows_the_ssh_command_of_a_running_reservation(client_for, student, host):
    start = slot_floor(timezone.now())
    ReservationFactory(
        user=student,
        host=host,
        start=start,
        end=start + timedelta(hours=4),
        status=Reservation.Status.RUNNING,
    )
    page = client_for(student).get(reverse("dashboard")).content.decode()
    assert f"ssh -p {student.forward_port} root@{host.address}" in page
    assert "Your limits: 8 CPUs, 32 GiB memory (RAM + swap), 1 GPUs" in page


def test_the_dashboard_explains_a_blocked_reservation(client_for, student, host):
    start = slot_floor(timezone.now())
    ReservationFactory(
        user=student,
        host=host,
        start=start,
        end=start + timedelta(hours=4),
        status=Reservation.Status.BLOCKED,
        status_message="Work folder 250 GB over quota 200 GB",
    )
    page = client_for(student).get(reverse("dashboard")).content.decode()
    assert "Work folder 250 GB over quota 200 GB" in page


def test_the_dashboard_shows_own_events_and_latest_audit_only(client_for, student, host, upcoming):
    ContainerEventFactory(message="Mine started", reservation=upcoming, user=student)
    ContainerEventFactory(message="Someone else's secret", user=UserFactory(username="other"))
    SpaceAudit.objects.create(
        user=student, host=host, work_gb=10, backup_gb=1, measured_at=timezone.now() - timedelta(days=1)
    )
    SpaceAudit.objects.create(user=student, host=host, work_gb=250.5, backup_gb=2, over_quota=True)
    page = client_for(student).get(reverse("dashboard")).content.decode()
    assert "Mine started" in page
    assert "Someone else" not in page
    assert "250.5 / 200 GB" in page
    assert "10.0 / 200 GB" not in page


def test_the_timeline_labels_blocks_with_usernames_never_commands(client_for, student, host, upcoming):
    other = UserFactory(username="m11200001")
    start = next_slot(6)
    ReservationFactory(
        user=other,
        host=host,
        start=start,
        end=start + timedelta(hours=2),
        extra_command="python secret_job.py --token abc",
        gpus=[host.gpus.get(index=1)],
    )
    ReservationFactory(
        user=student, host=host, start=start, end=start + timedelta(hours=2), gpus=[host.gpus.get(index=0)]
    )
    page = client_for(student).get(reverse("timeline")).content.decode()
    assert "m11200001" in page
    assert "secret_job" not in page
    assert 'class="tl-block own"' in page


def test_the_timeline_query_count_does_not_grow_with_reservations(
    client_for, student, host, django_assert_max_num_queries
):
    client = client_for(student)
    gpus = list(host.gpus.all())
    second_host = HostFactory(name="gpu-02", gpus=4)
    start = next_slot(1)
    ReservationFactory(host=host, start=start, end=start + SLOT, gpus=gpus[:1])
    with django_assert_max_num_queries(12) as few:
        client.get(reverse("timeline"))
    for hour in range(40):
        moment = start + timedelta(hours=hour + 1)
        ReservationFactory(host=host, start=moment, end=moment + SLOT, gpus=[gpus[hour % 2]])
        ReservationFactory(
            host=second_host, start=moment, end=moment + SLOT, gpus=[second_host.gpus.get(index=hour % 4)]
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse("timeline"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"start_date": "9999-12-31", "duration": "2-week"},
        {"start_date": "0001-01-01"},
        {"end_kind": "end_at", "end_date": "9999-12-31", "end_time": "23:30"},
        {"cpus": "1e999999999", "gpu_count": "²"},
    ],
)
def test_odd_booking_input_is_a_form_error_not_a_crash(client_for, student, host, image, overrides):
    data = booking_data(host, image, **overrides)
    client = client_for(student)
    assert client.get(reverse("reservation-capacity"), data).status_code == 200
    response = client.post(reverse("reservation-new"), data)
    assert response.status_code == 200
    assert not Reservation.objects.exists()


@pytest.mark.parametrize("host_param", ["²", "9" * 40, "-1", "x"])
def test_the_timeline_ignores_an_odd_host_filter(client_for, student, host, host_param):
    assert client_for(student).get(reverse("timeline"), {"host": host_param}).status_code == 200


def test_the_form_suggests_no_more_memory_than_the_profile_allows(client_for, student, host, default_profile):
    default_profile.memory_gb = 2
    default_profile.save()
    form = client_for(student).get(reverse("reservation-new")).context["form"]
    assert form["memory_gb"].value() == 2


def test_the_form_suggests_no_gpus_on_a_host_without_gpus(client_for, student):
    HostFactory(name="vm", gpus=0)
    form = client_for(student).get(reverse("reservation-new")).context["form"]
    assert form["gpu_count"].value() == 0
    assert form["memory_gb"].value() == 4


def test_the_form_costs_no_more_queries_than_the_booking_it_posts(
    client_for, student, host, image, django_assert_max_num_queries
):
    for name in ("gpu-02", "gpu-03", "gpu-04"):
        HostFactory(name=name, gpus=2)
    ImagePresence.objects.create(host=host, image=image, state=ImagePresence.State.PRESENT)
    client = client_for(student)
    # The host and image lists are read once, every host's label from one capacity read:
    # the count does not grow with the hosts.
    with django_assert_max_num_queries(12) as form:
        assert client.get(reverse("reservation-new")).status_code == 200
    with CaptureQueriesContext(connection) as post:
        assert client.post(reverse("reservation-new"), booking_data(host, image)).status_code == 302
    assert len(form) <= len(post)
