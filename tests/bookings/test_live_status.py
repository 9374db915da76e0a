"""The student's live view of a reservation: status polled without reloading, friendly
messages, image and SSH key warnings before the start, and a self-service restart."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bookings.models import Reservation
from containers.models import ImagePresence
from tests.factories import HostFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db
Status = Reservation.Status
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk student@laptop"


@pytest.fixture
def running(student, host):
    now = timezone.now()
    return ReservationFactory(
        user=student,
        host=host,
        start=now - timedelta(minutes=5),
        end=now + timedelta(hours=2),
        status=Status.RUNNING,
        container_id="c0ffee",
    )


@pytest.fixture
def upcoming(student, host):
    now = timezone.now()
    return ReservationFactory(
        user=student, host=host, start=now + timedelta(hours=2), end=now + timedelta(hours=4)
    )


def test_the_status_fragment_keeps_polling_while_the_container_is_coming(client, student, upcoming):
    client.force_login(student)
    page = client.get(reverse("reservation-status", args=[upcoming.pk])).content.decode()
    assert 'hx-trigger="every 3s"' in page
    assert "Scheduled" in page
    upcoming.status = Status.RUNNING
    upcoming.save()
    page = client.get(reverse("reservation-status", args=[upcoming.pk])).content.decode()
    assert f"ssh -p {upcoming.forward_port} root@" in page


def test_the_status_fragment_stops_polling_once_the_reservation_is_over(client, student, upcoming):
    upcoming.status = Status.FAILED
    upcoming.status_message = "500 Server Error: driver failed programming external connectivity"
    upcoming.save()
    client.force_login(student)
    page = client.get(reverse("reservation-status", args=[upcoming.pk])).content.decode()
    assert "hx-trigger" not in page
    assert "Your container could not start" in page
    # The engine's own words stay in the event log for maintainers.
    assert "driver failed programming" not in page


def test_the_reservation_page_and_dashboard_poll_the_status(client, student, running):
    client.force_login(student)
    for url in (reverse("reservation-detail", args=[running.pk]), reverse("dashboard")):
        page = client.get(url).content.decode()
        assert reverse("reservation-status", args=[running.pk]) in page
        assert "htmx-2.0.11.min.js" in page


@pytest.mark.parametrize("name", ["reservation-status", "reservation-restart"])
def test_another_users_reservation_answers_404(client, running, name):
    client.force_login(UserFactory(username="m11200002"))
    assert client.get(reverse(name, args=[running.pk])).status_code == 404


def test_another_user_cannot_restart_the_container(client, running):
    client.force_login(UserFactory(username="m11200002"))
    assert client.post(reverse("reservation-restart", args=[running.pk])).status_code == 404
    running.refresh_from_db()
    assert not running.restart_requested


@pytest.mark.parametrize("name", ["reservation-status", "reservation-restart"])
def test_an_anonymous_visitor_is_sent_to_log_in(client, running, name):
    answer = client.get(reverse(name, args=[running.pk]))
    assert answer.status_code == 302
    assert answer["Location"].startswith(reverse("login"))


def test_the_status_fragment_answers_only_get(client, student, running):
    client.force_login(student)
    assert client.post(reverse("reservation-status", args=[running.pk])).status_code == 405


def test_a_student_restarts_their_running_container(client, student, running):
    client.force_login(student)
    detail = client.get(reverse("reservation-detail", args=[running.pk])).content.decode()
    assert reverse("reservation-restart", args=[running.pk]) in detail
    assert client.get(reverse("reservation-restart", args=[running.pk])).status_code == 200
    answer = client.post(reverse("reservation-restart", args=[running.pk]), follow=True)
    assert answer.redirect_chain[-1][0] == reverse("reservation-detail", args=[running.pk])
    assert "Your container is being restarted" in answer.content.decode()
    running.refresh_from_db()
    assert running.restart_requested


def test_a_container_that_does_not_run_is_not_restarted(client, student, upcoming):
    client.force_login(student)
    answer = client.post(reverse("reservation-restart", args=[upcoming.pk]), follow=True)
    assert "Only a running reservation" in answer.content.decode()
    upcoming.refresh_from_db()
    assert not upcoming.restart_requested


def test_restart_answers_405_to_other_methods(client, student, running):
    client.force_login(student)
    assert client.put(reverse("reservation-restart", args=[running.pk])).status_code == 405


@pytest.mark.parametrize("name", ["reservation-new", "dashboard"])
def test_a_student_without_keys_is_warned_before_the_start(client, student, host, name):
    client.force_login(student)
    assert 'data-testid="no-keys-warning"' in client.get(reverse(name)).content.decode()
    student.ssh_public_keys = KEY
    student.save()
    assert 'data-testid="no-keys-warning"' not in client.get(reverse(name)).content.decode()


def test_a_missing_image_shows_on_the_dashboard_and_the_reservation_page(client, student, upcoming):
    ImagePresence.objects.create(
        host=upcoming.host, image=upcoming.image, state=ImagePresence.State.FAILED, message="denied"
    )
    client.force_login(student)
    for url in (reverse("dashboard"), reverse("reservation-detail", args=[upcoming.pk])):
        page = client.get(url).content.decode()
        assert f"The image {upcoming.image.reference} is not available on {upcoming.host.name}" in page
        assert "denied" not in page


def test_an_image_being_pulled_says_so(client, student, upcoming):
    ImagePresence.objects.create(host=upcoming.host, image=upcoming.image, state=ImagePresence.State.PULLING)
    client.force_login(student)
    page = client.get(reverse("reservation-detail", args=[upcoming.pk])).content.decode()
    assert "is being downloaded" in page


def test_the_reservation_page_shows_the_gpu_count_apart_from_the_ids(client, student, host):
    now = timezone.now()
    reservation = ReservationFactory(
        user=student,
        host=host,
        start=now + timedelta(hours=1),
        end=now + timedelta(hours=2),
        gpus=[host.gpus.get(index=1)],
    )
    client.force_login(student)
    page = client.get(reverse("reservation-detail", args=[reservation.pk])).content.decode()
    assert '<dd data-testid="gpu-count">1</dd>' in page
    assert '<dd data-testid="gpu-ids">1</dd>' in page


def test_students_read_plain_lines_where_the_engine_gave_raw_errors(client, student, upcoming):
    from tests.factories import ContainerEventFactory

    ContainerEventFactory(
        level="ERROR",
        sign="LaunchError",
        message="500 Server Error: driver failed programming external connectivity on endpoint",
        reservation=upcoming,
        user=student,
        host=upcoming.host,
    )
    ContainerEventFactory(level="INFO", message="Your container started", reservation=upcoming, user=student)
    client.force_login(student)
    for url in (reverse("dashboard"), reverse("reservation-detail", args=[upcoming.pk])):
        page = client.get(url).content.decode()
        assert "driver failed programming" not in page
        assert "[ERROR] LaunchError, Something went wrong with your container" in page
        assert "Your container started" in page


def test_the_restart_button_arrives_with_the_running_status(client, student, upcoming):
    client.force_login(student)
    restart = reverse("reservation-restart", args=[upcoming.pk])
    assert restart not in client.get(reverse("reservation-status", args=[upcoming.pk])).content.decode()
    upcoming.status = Status.RUNNING
    upcoming.save()
    assert restart in client.get(reverse("reservation-status", args=[upcoming.pk])).content.decode()


def test_the_booking_form_warns_about_an_image_the_host_cannot_get(client, student, host, image):
    # Another host may hold it, so the form still offers it (an image every host lacks is
    # not offered at all).
    HostFactory(name="gpu-02")
    ImagePresence.objects.create(host=host, image=image, state=ImagePresence.State.FAILED)
    client.force_login(student)
    panel = client.get(reverse("reservation-capacity"), {"host": host.pk, "image": image.pk}).content.decode()
    assert f"The image {image.reference} is not available on {host.name}" in panel
