"""The booking page over several hosts: each open host offered with what it has free, the
suggestion searched on every host the user may book, and a word when an agent is silent."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bookings.models import HostAccess
from bookings.services import NOT_ENOUGH_CAPACITY
from containers.agent_services import agent_claim
from tests.bookings.test_views import booking_data, next_slot
from tests.factories import HostFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def test_the_form_offers_each_open_host_with_what_it_has_free_now(client_for, student, host, image):
    HostFactory(name="gpu-02", cpus=8, ram_gb=32, swap_gb=0, gpus=1)
    secret = HostFactory(name="gpu-secret", gpus=1)
    HostAccess.objects.create(host=secret).users.set([UserFactory(username="project1")])

    page = client_for(student).get(reverse("reservation-new")).content.decode()

    assert "gpu-01 — free now: 16 CPUs, 80 GB, 2/2 GPUs" in page
    assert "gpu-02 — free now: 8 CPUs, 32 GB, 1/1 GPUs" in page
    assert "gpu-secret" not in page


def test_booking_a_host_one_may_not_book_by_its_id_is_refused(client_for, student, host, image):
    secret = HostFactory(name="gpu-secret", gpus=1)
    HostAccess.objects.create(host=secret).users.set([UserFactory(username="project1")])

    response = client_for(student).post(reverse("reservation-new"), booking_data(secret, image))

    assert response.status_code == 200
    assert "host" in response.context["form"].errors
    assert not secret.reservations.exists()


def test_the_suggestion_finds_the_earliest_window_on_another_host(client_for, student, host, image):
    other = HostFactory(name="gpu-02", gpus=2)
    start = next_slot(1)
    ReservationFactory(
        host=host,
        start=start - timedelta(minutes=30),
        end=start + timedelta(days=3),
        gpus=list(host.gpus.all()),
    )

    response = client_for(student).post(reverse("reservation-new"), booking_data(host, image))

    assert NOT_ENOUGH_CAPACITY in response.context["form"].non_field_errors()
    suggestion = response.context["suggestion"]
    assert suggestion["host"] == other
    assert suggestion["start"] == timezone.localtime(start)
    assert f"host={other.pk}" in suggestion["url"]
    assert "on gpu-02" in response.content.decode()


def test_the_panel_says_when_the_hosts_agent_is_not_answering(client_for, student, host, image):
    agent_claim(host=host, holder="gpu-01:1:a", now=timezone.now() - timedelta(minutes=5))

    response = client_for(student).get(reverse("reservation-capacity"), booking_data(host, image))

    assert response.status_code == 200
    assert "agent is not answering" in response.content.decode()
    assert (
        "its agent is not answering" in client_for(student).get(reverse("reservation-new")).content.decode()
    )


def test_the_suggestion_never_names_a_host_locked_for_maintenance(client_for, student, host, image):
    start = next_slot(1)
    ReservationFactory(
        host=host,
        start=start - timedelta(minutes=30),
        end=start + timedelta(hours=3),
        gpus=list(host.gpus.all()),
    )
    host.accepting_bookings = False
    host.save(update_fields=["accepting_bookings"])

    alone = client_for(student).get(reverse("reservation-capacity"), booking_data(host, image))
    assert alone.context["suggestion"] in (None, {"start": None})

    other = HostFactory(name="gpu-02", gpus=2)
    response = client_for(student).get(reverse("reservation-capacity"), booking_data(host, image))
    assert response.context["suggestion"]["host"] == other
