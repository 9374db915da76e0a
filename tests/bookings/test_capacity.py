"""The capacity engine: what is free in a window (CPU and memory peak, free GPUs in
preference order), the earliest fitting window, and the in-memory snapshot the job
scheduler plans with."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from bookings import capacity
from bookings.capacity import MINUTE, HostLoad, availability, earliest_fit
from bookings.models import Reservation
from bookings.services import NOT_ENOUGH_CAPACITY, OWN_OVERLAP, reservation_create, reservation_extend
from bookings.timeline import timeline
from bookings.timeslots import MAX_AHEAD, SLOT
from tests.factories import HostFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db

START = local(2026, 3, 2, 12)
NOW = local(2026, 3, 2, 10, 10)


def fit(host, *, hours=2, cpus=1, memory_gb=1, gpu_count=1, user_id=None, not_before=START, **kwargs):
    found = earliest_fit(
        hosts=kwargs.pop("hosts", [host]),
        cpus=Decimal(cpus),
        memory_gb=memory_gb,
        gpu_count=gpu_count,
        duration=timedelta(hours=hours),
        not_before=not_before,
        not_after=local(2026, 3, 2, 10) + MAX_AHEAD,
        user_id=user_id,
        **kwargs,
    )
    return None if found is None else (found.start, found.end)


def both_ways(host, start, end, **kwargs):
    """The same question asked of the database and of a snapshot; both must agree."""
    direct = availability(host=host, start=start, end=end, **kwargs)
    snapshot = HostLoad.load(host, start, end).availability(start, end, **kwargs)
    assert (direct.peak, direct.free_gpus) == (snapshot.peak, snapshot.free_gpus)
    return direct


# What is free in a window --------------------------------------------------------------


def test_window_capacity_is_what_the_peak_leaves(host):
    gpu0 = host.gpus.get(index=0)
    ReservationFactory(
        host=host, start=START, end=START + timedelta(hours=2), cpus=6, memory_gb=20, gpus=[gpu0]
    )
    ReservationFactory(host=host, start=START + timedelta(hours=1), end=START + timedelta(hours=3), cpus=4)
    free = both_ways(host, START, START + timedelta(hours=4))
    assert (free.cpus, free.memory_gb, free.gpus, free.gpus_total) == (6, 59, 1, 2)


def test_cpus_and_memory_peak_at_an_instant_and_back_to_back_windows_do_not_add_up():
    host = HostFactory(cpus=16, ram_gb=64, swap_gb=16)
    ReservationFactory(host=host, start=START, end=START + SLOT, cpus=8, memory_gb=40)
    ReservationFactory(host=host, start=START + SLOT, end=START + 2 * SLOT, cpus=8, memory_gb=40)
    free = both_ways(host, START, START + 2 * SLOT)
    assert (free.peak.cpus, free.peak.memory_gb) == (8, 40)
    assert free.fits(cpus=Decimal(8), memory_gb=40, gpu_count=0)
    assert not free.fits(cpus=Decimal(9), memory_gb=1, gpu_count=0)
    assert not free.fits(cpus=Decimal(1), memory_gb=41, gpu_count=0)


def test_a_gpu_taken_for_part_of_the_window_is_not_free(host):
    gpu0, gpu1 = host.gpus.order_by("index")
    ReservationFactory(host=host, start=START + SLOT, end=START + 3 * SLOT, gpus=[gpu0])
    free = both_ways(host, START, START + 2 * SLOT)
    assert free.free_gpus == (gpu1,)
    assert not free.fits(cpus=Decimal(1), memory_gb=1, gpu_count=2)


def test_free_gpus_come_least_booked_first_ties_by_lowest_index():
    host = HostFactory(gpus=3)
    gpu0, gpu1, gpu2 = host.gpus.order_by("index")
    ReservationFactory(host=host, start=local(2026, 3, 3, 10), end=local(2026, 3, 3, 18), gpus=[gpu0])
    ReservationFactory(host=host, start=local(2026, 3, 3, 10), end=local(2026, 3, 3, 12), gpus=[gpu1])
    free = both_ways(host, START, START + timedelta(hours=1))
    assert free.free_gpus == (gpu2, gpu1, gpu0)
    assert free.pick_gpus(2) == [gpu2, gpu1]


def test_gpus_out_of_service_and_dead_reservations_are_left_out(host):
    gpu0, gpu1 = host.gpus.order_by("index")
    gpu0.is_active = False
    gpu0.save()
    for status in (Reservation.Status.CANCELLED, Reservation.Status.FAILED, Reservation.Status.ENDED):
        ReservationFactory(host=host, start=START, end=START + SLOT, cpus=16, memory_gb=80, status=status)
    host = type(host).objects.get(pk=host.pk)
    free = both_ways(host, START, START + SLOT)
    assert (free.cpus, free.memory_gb, free.free_gpus, free.gpus_total) == (16, 80, (gpu1,), 1)


def test_a_reservation_can_be_left_out_of_its_own_question(host):
    gpu0, _ = host.gpus.order_by("index")
    mine = ReservationFactory(host=host, start=START, end=START + SLOT, cpus=16, gpus=[gpu0])
    free = both_ways(host, START, START + SLOT, exclude_reservation_id=mine.pk)
    assert (free.cpus, free.gpus) == (16, 2)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the hand-written read is PostgreSQL's")
def test_the_hand_written_gpu_read_answers_as_the_orm_one_does():
    host = HostFactory(gpus=4)
    gpus = list(host.gpus.order_by("index"))
    mine = ReservationFactory(host=host, start=START, end=START + 2 * SLOT, gpus=[gpus[3]])
    ReservationFactory(host=host, start=START + SLOT, end=START + 3 * SLOT, gpus=[gpus[0]])
    ReservationFactory(host=host, start=local(2026, 3, 4, 10), end=local(2026, 3, 4, 20), gpus=[gpus[1]])
    ReservationFactory(host=host, start=local(2026, 2, 27, 10), end=local(2026, 2, 27, 12), gpus=[gpus[2]])
    gone = ReservationFactory(host=host, start=local(2026, 3, 1, 0), end=local(2026, 3, 5, 0), gpus=[gpus[2]])
    gone.allocations.update(active=False)
    for exclude in (None, mine.pk):
        by_sql = capacity._free_gpus_from_database(
            host=host, start=START, end=START + 2 * SLOT, exclude_reservation_id=exclude
        )
        by_orm = capacity._gpus_with_bookings_orm(
            host=host, start=START, end=START + 2 * SLOT, exclude_reservation_id=exclude
        )
        booked = {gpu.pk: gpu.booked for gpu in by_orm}
        assert by_sql == capacity._by_preference((gpu for gpu in by_orm if not gpu.held), booked)
        both_ways(host, START, START + 2 * SLOT, exclude_reservation_id=exclude)
    # Left out of the question, mine is the least booked; GPU 0 is held in the window.
    assert by_sql == (gpus[3], gpus[2], gpus[1])


def test_asking_for_more_gpus_than_are_free_is_a_caller_bug(host):
    with pytest.raises(ValueError):
        availability(host=host, start=START, end=START + SLOT).pick_gpus(3)


# The earliest fitting window -------------------------------------------------------------


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


def test_the_users_own_jobs_do_not_push_their_booking_away(host, student):
    ReservationFactory(
        user=student, host=host, start=START, end=START + timedelta(hours=2), kind=Reservation.Kind.JOB
    )
    assert fit(host, gpu_count=0, user_id=student.pk)[0] == START


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


def test_over_several_hosts_it_takes_the_earliest_and_names_host_and_gpus(host):
    ReservationFactory(host=host, start=START, end=START + timedelta(hours=3), gpus=list(host.gpus.all()))
    later = HostFactory(name="gpu-02", gpus=1)
    ReservationFactory(host=later, start=START, end=START + timedelta(hours=1), gpus=list(later.gpus.all()))
    found = earliest_fit(
        hosts=[host, later],
        cpus=Decimal(1),
        memory_gb=1,
        gpu_count=1,
        duration=timedelta(hours=1),
        not_before=START,
        not_after=START + MAX_AHEAD,
    )
    assert (found.host, found.start, found.gpus) == (later, START + timedelta(hours=1), [later.gpus.get()])


def test_bookings_start_on_the_half_hour_grid_and_jobs_on_the_minute(host):
    # A release leaves an allocation ending off the grid.
    gpus = list(host.gpus.all())
    odd_end = START + timedelta(minutes=17)
    ReservationFactory(host=host, start=START, end=odd_end, gpus=gpus)
    assert fit(host, gpu_count=1)[0] == START + SLOT
    assert fit(host, gpu_count=1, grid=MINUTE)[0] == odd_end


# The snapshot the job scheduler plans with -----------------------------------------------


def test_a_snapshot_answers_from_memory_with_a_fixed_number_of_queries(host, django_assert_max_num_queries):
    gpus = list(host.gpus.all())
    for hour in range(0, 40, 2):
        ReservationFactory(
            host=host, start=START + timedelta(hours=hour), end=START + timedelta(hours=hour + 1), gpus=gpus
        )
    horizon_end = START + timedelta(days=3)
    fresh = type(host).objects.get(pk=host.pk)
    with django_assert_max_num_queries(3):
        load = HostLoad.load(fresh, START, horizon_end)
    with django_assert_max_num_queries(0):
        found = load.earliest_fit(
            cpus=Decimal(1),
            memory_gb=1,
            gpu_count=2,
            duration=timedelta(hours=1),
            not_before=START,
            not_after=horizon_end - timedelta(hours=1),
        )
        assert found.start == START + timedelta(hours=1)
        load.availability(START, START + timedelta(hours=1))


def test_snapshots_of_many_hosts_agree_with_each_host_in_three_queries(host, django_assert_max_num_queries):
    other = HostFactory(name="gpu-02", gpus=4)
    HostFactory(name="cpu-01", gpus=0)
    ReservationFactory(
        host=host, start=START, end=START + timedelta(hours=2), cpus=6, gpus=[host.gpus.get(index=1)]
    )
    ReservationFactory(
        host=other, start=START, end=START + timedelta(hours=3), memory_gb=9, gpus=list(other.gpus.all()[:3])
    )
    hosts = list(type(host).objects.order_by("name"))
    end = START + timedelta(hours=1)
    with django_assert_max_num_queries(3):
        loads = HostLoad.load_all(hosts, START, end)
    for each in hosts:
        direct = availability(host=type(host).objects.get(pk=each.pk), start=START, end=end)
        snapshot = loads[each.pk].availability(START, end)
        assert (direct.peak, direct.free_gpus, direct.gpus_total) == (
            snapshot.peak,
            snapshot.free_gpus,
            snapshot.gpus_total,
        )


def test_a_hold_takes_capacity_for_later_questions(host):
    gpu0, gpu1 = host.gpus.order_by("index")
    load = HostLoad.load(host, START, START + timedelta(days=1))
    first = load.availability(START, START + timedelta(hours=2))
    assert first.pick_gpus(1) == [gpu0]
    load.hold(START, START + timedelta(hours=2), Decimal(10), 50, first.pick_gpus(1))
    after = load.availability(START + timedelta(hours=1), START + timedelta(hours=3))
    assert (after.cpus, after.memory_gb, after.free_gpus) == (6, 30, (gpu1,))
    found = load.earliest_fit(
        cpus=Decimal(8),
        memory_gb=1,
        gpu_count=2,
        duration=timedelta(hours=1),
        not_before=START,
        not_after=START + timedelta(hours=20),
    )
    assert found.start == START + timedelta(hours=2)


def test_the_quick_fit_check_agrees_with_availability(host):
    """HostLoad.fits answers like availability(...).fits for every window tried."""
    gpu0, gpu1 = host.gpus.order_by("index")
    ReservationFactory(host=host, start=START, end=START + timedelta(hours=3), cpus=10, gpus=[gpu0])
    load = HostLoad.load(host, START, START + timedelta(days=1))
    load.hold(START + timedelta(hours=1), START + timedelta(hours=5), Decimal(2), 60, [gpu1])
    for hour in range(12):
        start, end = START + timedelta(hours=hour), START + timedelta(hours=hour + 2)
        for cpus, memory_gb, gpu_count in ((6, 10, 0), (7, 10, 0), (1, 20, 1), (1, 1, 2), (1, 1, 1)):
            expected = load.availability(start, end).fits(cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count)
            quick = load.fits(start, end, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count)
            assert quick == expected, (hour, cpus, memory_gb, gpu_count)


def test_a_snapshot_refuses_questions_outside_its_horizon(host):
    load = HostLoad.load(host, START, START + timedelta(hours=4))
    with pytest.raises(ValueError):
        load.availability(START, START + timedelta(hours=5))


# Bookings and jobs -------------------------------------------------------------------------


def test_a_user_may_hold_a_booking_while_a_job_of_theirs_runs(student, host, image):
    ReservationFactory(
        user=student, host=host, start=START, end=START + timedelta(hours=2), kind=Reservation.Kind.JOB
    )
    booked = reservation_create(
        user=student, host=host, start=START, end=START + timedelta(hours=1), cpus=1, memory_gb=1, now=NOW
    )
    assert booked.kind == Reservation.Kind.BOOKING


def test_jobs_hold_capacity_like_bookings(student, host, image):
    ReservationFactory(
        host=host, start=START, end=START + timedelta(hours=2), cpus=16, kind=Reservation.Kind.JOB
    )
    with pytest.raises(ValidationError, match=NOT_ENOUGH_CAPACITY):
        reservation_create(
            user=student, host=host, start=START, end=START + timedelta(hours=1), cpus=1, memory_gb=1, now=NOW
        )


def test_a_booking_still_cannot_be_extended_into_the_users_next_booking(student, host, image):
    first = ReservationFactory(user=student, host=host, start=START, end=START + timedelta(hours=1))
    ReservationFactory(
        user=student, host=host, start=START + timedelta(hours=2), end=START + timedelta(hours=3)
    )
    with pytest.raises(ValidationError, match=re.escape(OWN_OVERLAP)):
        reservation_extend(reservation=first, end=START + timedelta(hours=3), now=NOW)


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="exclusion constraints exist on PostgreSQL only"
)
def test_the_database_lets_a_user_overlap_a_job_but_not_a_second_booking(student, host):
    ReservationFactory(user=student, host=host, start=START, end=START + timedelta(hours=2))
    ReservationFactory(
        user=student, host=host, start=START, end=START + timedelta(hours=2), kind=Reservation.Kind.JOB
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        ReservationFactory(user=student, host=host, start=START, end=START + timedelta(hours=1))


# The timeline ------------------------------------------------------------------------------


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
