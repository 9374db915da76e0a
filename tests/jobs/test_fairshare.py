from datetime import timedelta
from decimal import Decimal

import pytest

from bookings.models import Reservation
from jobs.selectors import decayed_hours, decayed_usage, priority_key
from tests.factories import JobFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 20, 12)
WEEK = timedelta(days=7)


def test_an_hour_used_one_half_life_ago_counts_half():
    hour = timedelta(hours=1)
    recent = decayed_hours(start=NOW - hour, end=NOW, now=NOW, half_life_hours=168)
    old = decayed_hours(start=NOW - WEEK - hour, end=NOW - WEEK, now=NOW, half_life_hours=168)
    assert recent == pytest.approx(1.0, rel=1e-2)
    assert old == pytest.approx(recent / 2, rel=1e-6)


def test_only_the_part_before_now_counts():
    assert decayed_hours(start=NOW, end=NOW + WEEK, now=NOW, half_life_hours=168) == 0.0


def test_usage_counts_bookings_and_running_work_in_gpu_hours(host):
    heavy, light = UserFactory(username="heavy"), UserFactory(username="light")
    gpus = list(host.gpus.all())
    # Two GPUs for the last two hours, still running: about 4 GPU-hours.
    ReservationFactory(
        user=heavy,
        host=host,
        start=NOW - timedelta(hours=2),
        end=NOW + timedelta(hours=5),
        gpus=gpus,
        status=Reservation.Status.RUNNING,
    )
    # CPU-only work: 8 CPUs for one hour weigh as one GPU-hour.
    ReservationFactory(
        user=light,
        host=host,
        start=NOW - timedelta(hours=1),
        end=NOW,
        cpus=Decimal(8),
        status=Reservation.Status.ENDED,
    )
    usage = decayed_usage(now=NOW)
    assert usage[heavy.pk] == pytest.approx(4.0, rel=1e-2)
    assert usage[light.pk] == pytest.approx(1.0, rel=1e-2)


def test_cancelled_and_future_reservations_cost_nothing(host):
    user = UserFactory()
    gpu = host.gpus.first()
    ReservationFactory(
        user=user,
        host=host,
        start=NOW - timedelta(hours=3),
        end=NOW,
        gpus=[gpu],
        status=Reservation.Status.CANCELLED,
    )
    ReservationFactory(user=user, host=host, start=NOW + timedelta(hours=1), end=NOW + timedelta(hours=3))
    assert decayed_usage(now=NOW).get(user.pk, 0.0) == 0.0


def test_the_half_life_is_a_setting(host, settings):
    user = UserFactory()
    ReservationFactory(
        user=user,
        host=host,
        start=NOW - timedelta(days=2, hours=1),
        end=NOW - timedelta(days=2),
        gpus=[host.gpus.first()],
        status=Reservation.Status.ENDED,
    )
    settings.FAIR_SHARE_HALF_LIFE_DAYS = 2
    assert decayed_usage(now=NOW)[user.pk] == pytest.approx(0.5, rel=1e-2)


def test_lower_usage_goes_first_then_submit_time(db):
    early_heavy = JobFactory(submitted_at=NOW - timedelta(hours=3))
    late_light = JobFactory(submitted_at=NOW - timedelta(hours=1))
    early_light = JobFactory(user=late_light.user, submitted_at=NOW - timedelta(hours=2))
    usage = {early_heavy.user_id: 10.0}
    order = sorted([early_heavy, late_light, early_light], key=lambda job: priority_key(job, usage))
    assert order == [early_light, late_light, early_heavy]
