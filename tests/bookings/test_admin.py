from functools import partial

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from bookings.models import Reservation
from tests.admin_helpers import message_texts, post_action, slot
from tests.factories import ReservationFactory

CHANGELIST = reverse("admin:bookings_reservation_changelist")


run_action = partial(post_action, changelist=CHANGELIST)


@pytest.fixture
def booked(db, host, student):
    return ReservationFactory(
        user=student, host=host, start=slot(3), end=slot(6), gpus=[host.gpus.get(index=0)]
    )


@pytest.mark.django_db
def test_start_now_moves_a_scheduled_reservation_to_the_current_slot(
    admin_client, booked, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "start_now", booked)
    assert response.status_code == 200
    booked.refresh_from_db()
    assert booked.start == slot()
    # The GPUs are held from the moment of the action, the window is shown from the slot.
    [held_from] = booked.allocations.values_list("start", flat=True)
    assert slot() <= held_from <= timezone.now()
    assert OrmQ.objects.count() == 1  # reconcile queued
    assert "Moved to start now: 1." in message_texts(response)


@pytest.mark.django_db
def test_start_now_is_refused_when_the_gpu_is_taken_before_the_booked_start(admin_client, booked, host):
    ReservationFactory(host=host, start=slot(), end=slot(2), gpus=[host.gpus.get(index=0)])
    response = run_action(admin_client, "start_now", booked)
    assert response.status_code == 200
    booked.refresh_from_db()
    assert booked.start == slot(3)
    assert any("not enough computing power" in text for text in message_texts(response))


@pytest.mark.django_db
def test_stop_now_releases_a_running_reservation(admin_client, host, student):
    running = ReservationFactory(user=student, host=host, start=slot(-1), end=slot(3), status="running")
    response = run_action(admin_client, "stop_now", running)
    running.refresh_from_db()
    assert running.released_at is not None
    assert running.end <= timezone.now()
    assert "Stopped: 1." in message_texts(response)


@pytest.mark.django_db
def test_restart_flags_a_running_reservation_and_refuses_a_scheduled_one(
    admin_client, booked, host, django_capture_on_commit_callbacks
):
    running = ReservationFactory(host=host, start=slot(-1), end=slot(1), status="running")
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "restart", running, booked)
    running.refresh_from_db()
    booked.refresh_from_db()
    assert running.restart_requested
    assert not booked.restart_requested
    assert OrmQ.objects.count() == 1
    messages = message_texts(response)
    assert "Restart queued: 1." in messages
    assert any(str(booked) in text and "Only a running" in text for text in messages)


@pytest.mark.django_db
def test_extend_asks_for_the_new_end_then_extends(admin_client, booked):
    page = run_action(admin_client, "extend", booked)
    assert page.status_code == 200
    assert b'name="end"' in page.content
    new_end = timezone.localtime(slot(8)).strftime("%Y %m %d %H %M")
    response = run_action(admin_client, "extend", booked, apply="Extend", end=new_end)
    booked.refresh_from_db()
    assert booked.end == slot(8)
    assert "Extended: 1." in message_texts(response)


@pytest.mark.django_db
def test_extend_with_a_bad_end_reports_it_and_changes_nothing(admin_client, booked):
    response = run_action(admin_client, "extend", booked, apply="Extend", end="someday")
    assert response.status_code == 200
    booked.refresh_from_db()
    assert booked.end == slot(6)
    assert any("Wrong Input!" in text for text in message_texts(response))


@pytest.mark.django_db
def test_cancel_cancels_a_scheduled_reservation(admin_client, booked):
    response = run_action(admin_client, "cancel", booked)
    booked.refresh_from_db()
    assert booked.status == Reservation.Status.CANCELLED
    assert not booked.allocations.filter(active=True).exists()
    assert "Cancelled: 1." in message_texts(response)


@pytest.mark.django_db
def test_a_student_cannot_run_admin_actions(client, booked, student):
    client.force_login(student)
    response = run_action(client, "cancel", booked)
    booked.refresh_from_db()
    assert booked.status == Reservation.Status.SCHEDULED
    assert response.redirect_chain[0][0].startswith(reverse("admin:login"))
