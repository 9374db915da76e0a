"""Selectors behind the web pages: free capacity, the earliest fitting window, the
timeline."""

from datetime import timedelta
from decimal import Decimal

import pytest

from bookings.models import Reservation
from bookings.selectors import earliest_fitting_window, window_capacity
from bookings.timeline import timeline
from bookings.timeslots import MAX_AHEAD, SLOT
from tests.factories import ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db

START = local(2026, 3, 2, 12)


def fit(host, *, hours=2, cpus=1, memory_gb=1, gpu_count=1, user_id=None, not_before=START):
    return earliest_fitting_window(
        host=host,
        length=timedelta(hours=hours),
        cpus=Decimal(cpus),
        memory_gb=memory_gb,
        gpu_count=gpu_count,
        not_before=not_before,
        latest_start=local(2026, 3, 2, 10) + MAX_AHEAD,
        user_id=user_id,
    )


def test_window_capacity_is_what_the_peak_leaves(host):
    gpu0 = host.gpus.get(index=0)
    ReservationFactory(
        host=host, start=START, end=START + timedelta(hours=2), cpus=6, memory_gb=20, gpus=[gpu0]
    )
    ReservationFactory(host=host, start=START + timedelta(hours=1), end=START + timedelta(hours=3), cpus=4)
    free = window_capacity(host=host, start=START, end=START + timedelta(hours=4))
    assert (free.cpus, free.memory_gb, free.gpus, free.gpus_total) == (6, 59, 1, 2)


def test_the_requested_window_is_returned_when_it_fits(host):
    assert fit(host) == (START, START + timedelta(hours=2))


def test_it_finds_the_first_end_after_which_enough_gpus_are_free(host):
    gpus = list(host.gpus.all())
    ReservationFactory(host=host, start=START, end=START + timedelta(hours=3), gpus=[gpus[0]])
    ReservationFactory(host=host, start=START - SLOT, end=START + timedelta(hours=5), gpus=[gpus[1]])
    assert fit(host, gpu_count=1)[0] == START + timedelta(hours=3)
    assert fit(host, gpu_count=2)[0] == START + timedelta(hours=5)


def test_a_later_booking_that_would_overlap_pushes_the_window_further(host):
    gpus = list(host.gpus.all())
    ReservationFactory(host=host, start=START, end=START + timedelta(hours=1), gpus=gpus)
    ReservationFactory(host=host, start=START + timedelta(hours=2), end=START + timedelta(hours=4), gpus=gpus)
    assert fit(host, hours=2, gpu_count=1)[0] == START + timedelta(hours=4)


def test_it_respects_cpus_and_memory_not_only_gpus(host):
    ReservationFactory(host=host, start=START, end=START + timedelta(hours=6), cpus=12, memory_gb=8)
    assert fit(host, cpus=8, gpu_count=0)[0] == START + timedelta(hours=6)
    assert fit(host, cpus=4, gpu_count=0)[0] == START


def test_it_skips_windows_that_overlap_the_users_own_bookings(host, student):
    ReservationFactory(user=student, host=host, start=START, end=START + timedelta(hours=2))
    assert fit(host, gpu_count=0, user_id=student.pk)[0] == START + timedelta(hours=2)


def test_cancelled_bookings_do_not_block(host):
    ReservationFactory(
        host=host,
        start=START,
        end=START + timedelta(hours=6),
        cpus=16,
        status=Reservation.Status.CANCELLED,
    )
    assert fit(host, gpu_count=0)[0] == START


def test_it_answers_none_when_nothing_fits_within_two_weeks(host):
    ReservationFactory(host=host, start=START, end=START + timedelta(days=14), gpus=list(host.gpus.all()))
    assert fit(host, gpu_count=1) is None


def test_the_timeline_puts_blocks_on_the_right_gpu_and_marks_own(host, student):
    other = UserFactory(username="someone")
    gpus = list(host.gpus.all())
    now = local(2026, 3, 2, 10, 10)
    ReservationFactory(user=other, host=host, start=START, end=START + timedelta(hours=2), gpus=[gpus[1]])
    ReservationFactory(user=student, host=host, start=START, end=START + timedelta(hours=1), gpus=[gpus[0]])
    data = timeline(user_id=student.pk, now=now)
    rows = data.hosts[0].gpu_rows
    assert data.slots == 14 * 48
    (own,) = rows[0].blocks
    (theirs,) = rows[1].blocks
    assert (own.own, own.column, own.span, own.reservation_id is not None) == (True, 5, 2, True)
    assert (theirs.own, theirs.username, theirs.span, theirs.reservation_id) == (False, "someone", 4, None)


def test_the_timeline_headroom_follows_the_bookings(host):
    now = local(2026, 3, 2, 10, 10)
    ReservationFactory(
        host=host, start=START, end=START + timedelta(hours=1), cpus=Decimal("2.5"), memory_gb=10
    )
    headroom = timeline(user_id=0, now=now).hosts[0].headroom
    assert [(h.column, h.span, h.cpus, h.memory_gb) for h in headroom[:3]] == [
        (1, 4, 16, 80),
        (5, 2, Decimal("13.5"), 70),
        (7, 14 * 48 - 6, 16, 80),
    ]
