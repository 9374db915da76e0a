from datetime import timedelta

import pytest

from bookings.models import Reservation
from containers.telemetry.models import GpuSample, ReservationGpuStatus
from containers.telemetry.selectors import (
    gpu_hours_busy_by_user,
    gpu_table,
    idle_reservations_for_user,
    reservation_gpu_usage,
    telemetry_host,
)
from tests.containers.telemetry.helpers import minute_samples
from tests.factories import HostFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db


def test_reservation_usage_averages_its_gpu_minutes_and_takes_the_peak_memory(host):
    gpu0, gpu1 = host.gpus.all()
    reservation = ReservationFactory(
        host=host, start=local(2026, 3, 2, 10), end=local(2026, 3, 2, 11), gpus=[gpu0, gpu1]
    )
    minute_samples(
        gpu0, local(2026, 3, 2, 10), local(2026, 3, 2, 10, 30), utilisation=90, memory_used_mb=20000
    )
    minute_samples(
        gpu0, local(2026, 3, 2, 10, 30), local(2026, 3, 2, 11), utilisation=10, memory_used_mb=1000
    )
    minute_samples(gpu1, local(2026, 3, 2, 10), local(2026, 3, 2, 11), utilisation=20, memory_used_mb=3000)
    # Outside its window, or before: someone else's time.
    minute_samples(gpu0, local(2026, 3, 2, 9), local(2026, 3, 2, 10), utilisation=100, memory_used_mb=24000)
    minute_samples(gpu1, local(2026, 3, 2, 11), local(2026, 3, 2, 12), utilisation=100, memory_used_mb=24000)

    usage = reservation_gpu_usage(reservation=reservation)

    assert usage.sample_count == 120
    assert usage.mean_utilisation_percent == pytest.approx((30 * 90 + 30 * 10 + 60 * 20) / 120)
    assert usage.peak_memory_mb == 20000
    assert [
        (gpu.index, round(gpu.mean_utilisation_percent), gpu.peak_memory_mb, gpu.memory_total_mb)
        for gpu in usage.per_gpu
    ] == [(0, 50, 20000, 24576), (1, 20, 3000, 24576)]
    assert usage.idle_flagged_at is None


def test_a_reservation_without_samples_has_no_usage(host):
    reservation = ReservationFactory(host=host, gpus=[host.gpus.first()])

    usage = reservation_gpu_usage(reservation=reservation)

    assert (usage.sample_count, usage.mean_utilisation_percent, usage.peak_memory_mb, usage.per_gpu) == (
        0,
        None,
        None,
        (),
    )


def test_gpu_hours_busy_count_busy_minutes_for_whoever_held_the_gpu(host):
    gpu = host.gpus.first()
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    ReservationFactory(
        user=alice, host=host, start=local(2026, 3, 2, 10), end=local(2026, 3, 2, 12), gpus=[gpu]
    )
    ReservationFactory(
        user=bob, host=host, start=local(2026, 3, 2, 12), end=local(2026, 3, 2, 13), gpus=[gpu]
    )
    minute_samples(gpu, local(2026, 3, 2, 10), local(2026, 3, 2, 11), utilisation=80)  # alice busy 1 h
    minute_samples(gpu, local(2026, 3, 2, 11), local(2026, 3, 2, 12), utilisation=4)  # alice idle
    minute_samples(gpu, local(2026, 3, 2, 12), local(2026, 3, 2, 12, 30), utilisation=5)  # bob busy 0.5 h
    minute_samples(gpu, local(2026, 3, 2, 13), local(2026, 3, 2, 14), utilisation=100)  # nobody's

    hours = gpu_hours_busy_by_user(local(2026, 3, 2), local(2026, 3, 3))

    assert hours == {alice.pk: pytest.approx(1.0), bob.pk: pytest.approx(0.5)}


def test_gpu_hours_busy_belong_to_the_range_the_reservation_starts_in(host):
    # A booking over the month's end: all its busy hours count in February, as its other
    # hours do in the usage report; March shows none of them, and none are lost.
    gpu = host.gpus.first()
    reservation = ReservationFactory(
        host=host, start=local(2026, 2, 28, 22), end=local(2026, 3, 1, 4), gpus=[gpu]
    )
    minute_samples(gpu, local(2026, 2, 28, 22), local(2026, 3, 1, 4), utilisation=50)

    february = gpu_hours_busy_by_user(local(2026, 2, 1), local(2026, 3, 1))
    march = gpu_hours_busy_by_user(local(2026, 3, 1), local(2026, 4, 1))

    assert february == {reservation.user_id: pytest.approx(6.0)}
    assert march == {}


def test_the_gpu_table_shows_fresh_samples_and_the_holder(host, now):
    gpu0, gpu1 = host.gpus.all()
    holder = ReservationFactory(
        host=host, user=UserFactory(username="m11007s05"), status=Reservation.Status.RUNNING, gpus=[gpu0]
    )
    ReservationGpuStatus.objects.create(reservation=holder, idle_flagged_at=now)
    GpuSample.objects.create(
        gpu=gpu0,
        taken_at=now - timedelta(minutes=2),
        utilisation_percent=10,
        memory_used_mb=1,
        process_count=0,
    )
    GpuSample.objects.create(
        gpu=gpu0,
        taken_at=now - timedelta(minutes=1),
        utilisation_percent=37,
        memory_used_mb=6144,
        process_count=1,
    )
    GpuSample.objects.create(
        gpu=gpu1,
        taken_at=now - timedelta(minutes=10),
        utilisation_percent=99,
        memory_used_mb=1,
        process_count=1,
    )

    table = gpu_table(now=now)

    assert table.available
    first, second = table.rows
    assert (
        first.index,
        first.utilisation_percent,
        first.memory_used_mb,
        first.holder_username,
        first.reservation_id,
        first.is_idle,
    ) == (0, 37, 6144, "m11007s05", holder.pk, True)
    assert (second.index, second.taken_at, second.holder_username) == (1, None, "")


def test_the_gpu_table_is_unavailable_without_fresh_samples(host, now):
    GpuSample.objects.create(gpu=host.gpus.first(), taken_at=now - timedelta(minutes=4), memory_used_mb=1)

    assert not gpu_table(now=now).available


def test_idle_reservations_for_user_are_the_running_flagged_ones(host, student, now):
    flagged = ReservationFactory(user=student, host=host, status=Reservation.Status.RUNNING)
    ReservationGpuStatus.objects.create(reservation=flagged, idle_flagged_at=now)
    ended = ReservationFactory(
        user=student, host=host, start=local(2026, 3, 1, 10), status=Reservation.Status.ENDED
    )
    ReservationGpuStatus.objects.create(reservation=ended, idle_flagged_at=now)
    busy = ReservationFactory(
        user=student, host=host, start=local(2026, 3, 2, 11), status=Reservation.Status.RUNNING
    )
    ReservationGpuStatus.objects.create(reservation=busy)

    assert list(idle_reservations_for_user(user_id=student.pk)) == [flagged]


def test_the_telemetry_host_is_the_named_one_or_the_only_one(db, settings):
    assert telemetry_host() is None
    only = HostFactory(name="gpu-01")
    assert telemetry_host() == only
    other = HostFactory(name="gpu-02")
    assert telemetry_host() is None
    settings.GPU_HOST_NAME = "gpu-02"
    assert telemetry_host() == other
    assert telemetry_host(name="gpu-01") == only
