"""Usage limits on bookings: caps at once across bookings and jobs, the rolling GPU-hour
budget and the longest continuous hold, through the booking services."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import profile_create_or_update
from bookings.limits import Limits, budget_fits_from, holdings, limits_for, usage_for
from bookings.models import Reservation
from bookings.services import reservation_cancel, reservation_create, reservation_extend, reservation_release
from tests.api_helpers import assert_error_shape, token_client
from tests.factories import CapabilityProfileFactory, HostFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 2, 10, 10)
DAY = timedelta(days=1)


@pytest.fixture
def big_host(db):
    return HostFactory(name="gpu-big", cpus=64, ram_gb=256, swap_gb=0, gpus=8)


@pytest.fixture(autouse=True)
def _no_hold_limit(settings):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 0


def book(user, host, start, end, gpu_count=1, cpus=1, memory_gb=1, now=NOW):
    return reservation_create(
        user=user,
        host=host,
        start=start,
        end=end,
        cpus=cpus,
        memory_gb=memory_gb,
        gpu_count=gpu_count,
        now=now,
    )


def set_default(default_profile, **limits):
    for name, value in limits.items():
        setattr(default_profile, name, value)
    default_profile.gpus = 4
    default_profile.save()


# limits_for ---------------------------------------------------------------------------------


def test_a_profile_without_a_cap_inherits_the_defaults(default_profile, student):
    set_default(default_profile, gpus_at_once=2, gpu_hours_per_week=100)
    student.capability_profile = CapabilityProfileFactory(gpu_hours_per_week=500)
    student.save()
    limits = limits_for(user=student, now=NOW)
    assert (limits.gpus_at_once, limits.gpu_hours_per_week) == (2, Decimal(500))
    assert limits.cpus_at_once is None


def test_no_cap_on_the_default_means_no_cap(default_profile, student):
    assert limits_for(user=student, now=NOW) == Limits()


def test_the_continuous_hold_comes_from_the_setting(default_profile, student, settings):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 48
    assert limits_for(user=student, now=NOW).continuous_gpu_hold == timedelta(hours=48)


@pytest.mark.parametrize(
    ("field", "value"), [("cpus_at_once", 0), ("memory_gb_at_once", 0), ("gpu_hours_per_week", -1)]
)
def test_a_profile_refuses_a_negative_or_empty_cap_and_keeps_what_it_had(field, value):
    profile_create_or_update(name="thesis", gpus_at_once=3)
    with pytest.raises(ValidationError) as error:
        profile_create_or_update(name="thesis", **{field: value})
    assert field in error.value.message_dict
    assert getattr(CapabilityProfileFactory._meta.model.objects.get(name="thesis"), field) in (None,)


# Caps at once -------------------------------------------------------------------------------


def test_it_refuses_a_booking_over_the_gpu_cap_naming_what_the_user_holds(default_profile, student, big_host):
    set_default(default_profile, gpus_at_once=2)
    book(student, big_host, local(2026, 3, 3, 10), local(2026, 3, 3, 12), gpu_count=1)
    ReservationFactory(
        user=student,
        host=big_host,
        kind=Reservation.Kind.JOB,
        start=local(2026, 3, 3, 11),
        end=local(2026, 3, 3, 14),
        gpu_count=1,
    )
    with pytest.raises(ValidationError) as error:
        book(student, big_host, local(2026, 3, 3, 11), local(2026, 3, 3, 13), gpu_count=1)
    message = " ".join(error.value.messages)
    assert error.value.code == "over_cap"
    assert "your GPUs at once" in message and "allows 2" in message and "hold 2" in message
    assert "your booking on gpu-big" in message and "your job on gpu-big" in message


def test_back_to_back_with_the_cap_full_is_fine(default_profile, student, big_host):
    set_default(default_profile, gpus_at_once=2)
    book(student, big_host, local(2026, 3, 3, 10), local(2026, 3, 3, 12), gpu_count=2)
    book(student, big_host, local(2026, 3, 3, 12), local(2026, 3, 3, 14), gpu_count=2)


def test_the_cpu_and_memory_caps_count_jobs_too(default_profile, student, big_host):
    set_default(default_profile, cpus_at_once=4, memory_gb_at_once=8)
    ReservationFactory(
        user=student, host=big_host, kind=Reservation.Kind.JOB, start=NOW, end=NOW + DAY, cpus=3, memory_gb=2
    )
    with pytest.raises(ValidationError, match="your CPUs at once"):
        book(student, big_host, "now", "1-day", gpu_count=0, cpus=2)
    with pytest.raises(ValidationError, match="your memory at once"):
        book(student, big_host, "now", "1-day", gpu_count=0, cpus=1, memory_gb=7)
    book(student, big_host, "now", "1-day", gpu_count=0, cpus=1, memory_gb=6)


def test_cancelled_and_other_users_reservations_do_not_count(default_profile, student, big_host):
    set_default(default_profile, gpus_at_once=1)
    first = book(student, big_host, local(2026, 3, 3, 10), local(2026, 3, 3, 12))
    reservation_cancel(reservation=first, now=NOW)
    book(UserFactory(), big_host, local(2026, 3, 3, 10), local(2026, 3, 3, 12))
    book(student, big_host, local(2026, 3, 3, 10), local(2026, 3, 3, 12))


def test_an_extension_into_a_full_cap_is_refused(default_profile, student, big_host):
    set_default(default_profile, gpus_at_once=1)
    booking = book(student, big_host, local(2026, 3, 3, 10), local(2026, 3, 3, 12))
    ReservationFactory(
        user=student, host=big_host, kind=Reservation.Kind.JOB, start=local(2026, 3, 3, 13), gpu_count=1
    )
    reservation_extend(reservation=booking, end=local(2026, 3, 3, 13), now=NOW)
    with pytest.raises(ValidationError, match="your GPUs at once"):
        reservation_extend(reservation=booking, end=local(2026, 3, 3, 14), now=NOW)
    booking.refresh_from_db()
    assert booking.end == local(2026, 3, 3, 13)


# The rolling budget -------------------------------------------------------------------------


def test_it_refuses_a_booking_over_the_weekly_budget_with_hours_left_and_when(
    default_profile, student, big_host
):
    set_default(default_profile, gpu_hours_per_week=100)
    book(student, big_host, local(2026, 3, 3, 0), local(2026, 3, 4, 0), gpu_count=2)  # 48 GPU-hours
    book(student, big_host, local(2026, 3, 5, 0), local(2026, 3, 6, 0), gpu_count=2)  # 96
    with pytest.raises(ValidationError) as error:
        book(student, big_host, local(2026, 3, 7, 0), local(2026, 3, 7, 6), gpu_count=1)  # 102
    message = " ".join(error.value.messages)
    assert error.value.code == "over_budget"
    assert "100 GPU-hours per 7 days" in message and "4.0 are left" in message
    # The first booking's hours leave the window a week after they were held.
    assert "2026-03-09 20:00" in message
    book(student, big_host, local(2026, 3, 7, 0), local(2026, 3, 7, 4), gpu_count=1)  # exactly 100


def test_a_request_bigger_than_the_whole_budget_says_so(default_profile, student, big_host):
    set_default(default_profile, gpu_hours_per_week=24)
    with pytest.raises(ValidationError, match="more than your 24 GPU-hours per 7 days"):
        book(student, big_host, local(2026, 3, 3, 0), local(2026, 3, 4, 2), gpu_count=1)


def test_an_early_release_gives_the_rest_of_the_hours_back(default_profile, student, big_host):
    set_default(default_profile, gpu_hours_per_week=30)
    running = book(student, big_host, "now", "1-day", gpu_count=1)
    running.status = Reservation.Status.RUNNING
    running.save()
    later = local(2026, 3, 3, 20)
    with pytest.raises(ValidationError, match="GPU-hour budget"):
        book(student, big_host, later, later + timedelta(hours=10))
    reservation_release(reservation=running, now=NOW + timedelta(hours=2))
    book(student, big_host, later, later + timedelta(hours=10), now=NOW + timedelta(hours=2))


def test_jobs_count_in_the_budget_at_their_time_limit_until_they_end(default_profile, student, big_host):
    set_default(default_profile, gpu_hours_per_week=10)
    ReservationFactory(
        user=student,
        host=big_host,
        kind=Reservation.Kind.JOB,
        start=NOW,
        end=NOW + timedelta(hours=8),
        gpu_count=1,
    )
    with pytest.raises(ValidationError, match="GPU-hour budget"):
        book(student, big_host, local(2026, 3, 3, 10), local(2026, 3, 3, 13))


def test_the_budget_looks_at_every_seven_day_window(default_profile, student, big_host):
    set_default(default_profile, gpu_hours_per_week=50)
    book(student, big_host, local(2026, 3, 3, 0), local(2026, 3, 4, 0))  # 24 on Tuesday
    book(student, big_host, local(2026, 3, 15, 0), local(2026, 3, 16, 0))  # 24 two weeks on
    # 30 hours between them: each week around it holds one day at most... until it meets both.
    book(student, big_host, local(2026, 3, 10, 0), local(2026, 3, 10, 20))
    with pytest.raises(ValidationError, match="GPU-hour budget"):
        book(student, big_host, local(2026, 3, 12, 0), local(2026, 3, 12, 8))


def test_the_earliest_start_that_fits_is_where_hours_come_back():
    limits = Limits(gpu_hours_per_week=Decimal(24))
    user = None  # plain rows: no database
    del user
    from bookings.limits import Held

    held = [Held(local(2026, 3, 2, 0), local(2026, 3, 3, 0), Decimal(1), 1, 1, False, "booking", "h")]
    start = local(2026, 3, 4, 0)
    assert budget_fits_from(
        limits=limits, held=held, start=start, end=start + timedelta(hours=2), gpu_count=1
    ) == local(2026, 3, 9, 0)


# The continuous hold ------------------------------------------------------------------------


def test_it_refuses_back_to_back_bookings_longer_than_the_hold_limit(
    default_profile, student, big_host, settings
):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 14 * 24
    set_default(default_profile)
    first = ReservationFactory(
        user=student, host=big_host, start=local(2026, 2, 20, 10), end=local(2026, 3, 6, 10), gpu_count=1
    )
    first.status = Reservation.Status.RUNNING
    first.save()
    with pytest.raises(ValidationError) as error:
        book(student, big_host, local(2026, 3, 6, 10), local(2026, 3, 10, 10))
    assert error.value.code == "continuous_hold"
    assert "336 hours in a row" in " ".join(error.value.messages)
    # A break of one slot ends the hold; CPU-only bookings never count.
    book(student, big_host, local(2026, 3, 6, 10), local(2026, 3, 10, 10), gpu_count=0)


def test_a_gap_breaks_the_hold(default_profile, student, big_host, settings):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 24
    set_default(default_profile)
    book(student, big_host, local(2026, 3, 3, 0), local(2026, 3, 3, 20))
    with pytest.raises(ValidationError, match="without a break"):
        book(student, big_host, local(2026, 3, 3, 20), local(2026, 3, 4, 2))
    book(student, big_host, local(2026, 3, 3, 20, 30), local(2026, 3, 4, 2))


# What the user reads ------------------------------------------------------------------------


def test_usage_counts_the_week_behind_and_ahead(default_profile, student, big_host):
    set_default(default_profile, gpu_hours_per_week=80)
    ReservationFactory(
        user=student,
        host=big_host,
        start=NOW - 2 * DAY,
        end=NOW - DAY,
        gpu_count=2,
        status=Reservation.Status.ENDED,
    )
    ReservationFactory(
        user=student,
        host=big_host,
        start=NOW - DAY,
        end=NOW - DAY + timedelta(hours=3),
        gpu_count=1,
        status=Reservation.Status.CANCELLED,
    )
    running = ReservationFactory(
        user=student,
        host=big_host,
        start=NOW - timedelta(hours=1),
        end=NOW + timedelta(hours=2),
        gpu_count=1,
        status=Reservation.Status.RUNNING,
    )
    usage = usage_for(user=student, now=NOW)
    assert (usage.gpu_hours_week, usage.gpu_hours_ahead) == (49.0, 2.0)
    assert usage.gpu_hours_budget == Decimal(80)
    assert usage.gpus_now == 1
    assert holdings(user_ids=[student.pk], start=NOW, end=NOW)[student.pk][0].start == running.start


# The API ------------------------------------------------------------------------------------


def test_the_api_answers_usage_against_the_budget(default_profile, student, big_host):
    set_default(default_profile, gpu_hours_per_week=40, gpus_at_once=2)
    api = token_client(student)
    now = timezone.now()
    ReservationFactory(
        user=student,
        host=big_host,
        start=now - DAY,
        end=now - DAY + timedelta(hours=5),
        gpu_count=2,
        status=Reservation.Status.ENDED,
    )
    body = api.get("/api/v1/me/usage/").json()
    assert body["gpu_hours_week"] == 10.0 and body["gpu_hours_per_week"] == 40.0
    assert body["gpu_hours_left"] == 30.0
    assert body["gpus_at_once"] == 2 and body["cpus_at_once"] is None and body["gpus_now"] == 0
    assert APIClient().get("/api/v1/me/usage/").status_code in (401, 403)


def test_the_api_refuses_a_booking_over_the_cap_in_the_one_error_shape(default_profile, student, big_host):
    set_default(default_profile, gpus_at_once=1)
    api = token_client(student)
    data = {"host": big_host.name, "start": "now", "end": "1-day", "cpus": 1, "memory_gb": 1, "gpu_count": 1}
    assert api.post("/api/v1/reservations/", data, format="json").status_code == 201
    later = timezone.localtime(timezone.now() + 2 * DAY)
    refused = api.post(
        "/api/v1/reservations/", data | {"start": f"{later:%Y %m %d %H} 00", "gpu_count": 2}, format="json"
    )
    assert refused.status_code == 400
    assert_error_shape(refused.json())


# The pages ----------------------------------------------------------------------------------


def test_the_dashboard_shows_used_against_the_budget(client, default_profile, student, big_host):
    set_default(default_profile, gpu_hours_per_week=40, gpus_at_once=2)
    now = timezone.now()
    ReservationFactory(
        user=student,
        host=big_host,
        start=now - DAY,
        end=now - DAY + timedelta(hours=5),
        gpu_count=2,
        status=Reservation.Status.ENDED,
    )
    client.force_login(student)
    page = client.get(reverse("dashboard")).content.decode()
    assert "GPU-hours this week: 10.0 / 40 used (30.0 left" in page
    assert "GPUs held now: 0 of 2 at once." in page


def test_staff_see_each_users_week_on_the_reports_page(client, default_profile, student, big_host):
    set_default(default_profile, gpu_hours_per_week=40)
    now = timezone.now()
    ReservationFactory(
        user=student, host=big_host, start=now - DAY, end=now - DAY + timedelta(hours=3), gpu_count=1
    )
    client.force_login(UserFactory(username="staffer", is_staff=True))
    page = client.get(reverse("reports")).content.decode()
    assert 'data-testid="week-usage"' in page and student.username in page and "3.0" in page


def test_the_admin_account_page_shows_the_week_and_the_caps(admin_client, default_profile, student):
    set_default(default_profile, gpu_hours_per_week=40, gpus_at_once=2)
    page = admin_client.get(reverse("admin:accounts_user_change", args=[student.pk])).content.decode()
    assert "GPU-hours, last 7 days: 0 / budget 40" in page and "0 GPUs (cap 2)" in page


def test_the_booking_form_shows_the_budget_refusal_and_books_nothing(
    client, default_profile, student, host, image
):
    set_default(default_profile, gpu_hours_per_week=10)
    client.force_login(student)
    start = timezone.localtime(timezone.now() + DAY)
    data = {
        "host": host.pk,
        "start_date": f"{start:%Y-%m-%d}",
        "start_time": "10:00",
        "end_kind": "duration",
        "duration": "1-day",
        "cpus": "2",
        "memory_gb": "8",
        "gpu_count": "1",
        "image": image.pk,
        "extra_command": "",
    }
    response = client.post(reverse("reservation-new"), data)
    assert response.status_code == 200
    assert "Over your GPU-hour budget" in response.content.decode()
    assert not Reservation.objects.exists()


def test_the_fullest_week_sweep_agrees_with_trying_every_window():
    """The budget's sweep against the plain definition: the most GPU-hours of any 7-day
    window, tried at every instant a window's start or end meets a span's edge."""
    import random

    from bookings.limits import WEEK, _Span, _worst_week

    def by_trying(spans, start, end):
        candidates = {start - WEEK, end}
        for span in spans:
            for edge in (span.start, span.end):
                candidates |= {m for m in (edge, edge - WEEK) if start - WEEK < m < end}
        return max(sum(span.hours_in(m, m + WEEK) for span in spans) for m in candidates)

    rng = random.Random(3)
    first = local(2026, 3, 1)
    for _ in range(500):
        spans = []
        for _span in range(rng.randrange(0, 10)):
            start = first + timedelta(minutes=30 * rng.randrange(0, 48 * 30))
            spans.append(
                _Span(start, start + timedelta(minutes=30 * rng.randrange(1, 48 * 10)), rng.randrange(1, 4))
            )
        start = first + timedelta(minutes=30 * rng.randrange(0, 48 * 30))
        end = start + timedelta(minutes=30 * rng.randrange(0, 48 * 14))
        assert _worst_week(spans, start, end)[0] == pytest.approx(by_trying(spans, start, end))
