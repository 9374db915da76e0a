from functools import partial

import pytest
from django.urls import reverse

from bookings.models import Reservation
from containers.models import Image
from tests.admin_helpers import message_texts, post_action, slot
from tests.factories import ContainerEventFactory, HostFactory, ReservationFactory, UserFactory

CHANGELIST = reverse("admin:containers_host_changelist")


run_action = partial(post_action, changelist=CHANGELIST)


@pytest.mark.django_db
def test_lock_and_unlock_switch_accepting_bookings(admin_client, host):
    run_action(admin_client, "lock", host)
    host.refresh_from_db()
    assert not host.accepting_bookings
    run_action(admin_client, "unlock", host)
    host.refresh_from_db()
    assert host.accepting_bookings


@pytest.mark.django_db
def test_drain_asks_first_then_locks_stops_and_cancels(admin_client, host):
    running = ReservationFactory(host=host, start=slot(-1), end=slot(2), status="running")
    scheduled = ReservationFactory(host=host, start=slot(3), end=slot(4))
    page = run_action(admin_client, "drain", host)
    assert b"1 to stop now, 1 to cancel" in page.content
    host.refresh_from_db()
    assert host.accepting_bookings  # nothing happens before the confirmation
    response = run_action(admin_client, "drain", host, apply="Yes, drain")
    host.refresh_from_db()
    running.refresh_from_db()
    scheduled.refresh_from_db()
    assert not host.accepting_bookings
    assert running.released_at is not None
    assert scheduled.status == Reservation.Status.CANCELLED
    assert f"{host}: locked, 1 stopped, 1 cancelled." in message_texts(response)


@pytest.mark.django_db
def test_the_event_log_filters_by_level_sign_user_and_host(admin_client, host):
    user = UserFactory(username="m11007s05")
    other_host = HostFactory(name="gpu-02")
    ContainerEventFactory(level="WARNING", sign="SpaceWarning", message="over quota", user=user, host=host)
    ContainerEventFactory(level="INFO", message="started elsewhere", host=other_host)
    url = reverse("admin:containers_containerevent_changelist")
    for query in (
        {"level__exact": "WARNING"},
        {"sign": "SpaceWarning"},
        {"user__id__exact": user.pk},
        {"host__id__exact": host.pk},
    ):
        response = admin_client.get(url, query)
        assert response.status_code == 200
        assert b"over quota" in response.content
        assert b"started elsewhere" not in response.content


@pytest.mark.django_db
def test_an_image_whose_start_command_the_launch_could_not_split_is_refused(admin_client):
    form = {"reference": "lab/broken:1", "is_active": "on", "start_command": "/usr/sbin/sshd -D 'oops"}

    response = admin_client.post(reverse("admin:containers_image_add"), form)

    assert response.status_code == 200
    assert "The start command cannot be read as arguments (No closing quotation)" in response.content.decode()
    assert not Image.objects.filter(reference="lab/broken:1").exists()


@pytest.mark.django_db
def test_an_image_with_a_start_command_the_launch_can_split_is_saved(admin_client):
    command = "/usr/sbin/sshd -D -o 'LogLevel INFO'"
    form = {"reference": "lab/ok:1", "is_active": "on", "login": "keys", "start_command": command}

    admin_client.post(reverse("admin:containers_image_add"), form)

    assert Image.objects.get(reference="lab/ok:1").start_command == command
