"""What the pages say is free "now" is what a `now` booking gets: the server from this
moment, not from the start of the slot (bookings.timeslots.needed_from)."""

import pytest

from bookings.selectors import host_choice_labels, host_outlooks
from bookings.services import reservation_create, reservation_release
from tests.conftest import NOW
from tests.factories import ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db


@pytest.fixture
def released_in_this_slot(host):
    """Both GPUs were held from 10:00 and given back at 10:05; it is 10:10 now."""
    holder = ReservationFactory(
        user=UserFactory(username="early"),
        host=host,
        start=local(2026, 3, 2, 10),
        end=local(2026, 3, 2, 12),
        status="running",
        gpus=list(host.gpus.all()),
    )
    return reservation_release(reservation=holder, now=local(2026, 3, 2, 10, 5))


def test_gpus_given_back_earlier_in_the_slot_show_as_free_now(student, host, released_in_this_slot):
    assert "2/2 GPUs" in host_choice_labels(user=student, now=NOW)[host.pk]
    [outlook] = host_outlooks(user=student, now=NOW)
    assert outlook.free.gpus == 2


def test_and_a_now_booking_gets_them(student, host, image, released_in_this_slot):
    booked = reservation_create(
        user=student, host=host, start="now", end="1-day", cpus=1, memory_gb=1, gpu_count=1, now=NOW
    )
    assert booked.gpu_count == 1 and booked.start == local(2026, 3, 2, 10)
