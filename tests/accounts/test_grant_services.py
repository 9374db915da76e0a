"""Requests for more and the grants they become: asking, answering, the grant applying
inside the one place each limit is computed, and ending by itself."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.grant_selectors import priority_factors
from accounts.grant_services import (
    ends_at_for,
    limit_grant_end_now,
    limit_grants_expire,
    limit_request_approve,
    limit_request_create,
    limit_request_deny,
)
from accounts.models import LimitGrant, LimitKind, LimitRequest, Notification, NotificationKind
from accounts.selectors import capabilities_for, capability_for
from accounts.tasks import expire_limit_grants
from bookings.limits import limits_for
from jobs.selectors import fair_share_order, priority_usage, queued_rows
from tests.factories import CapabilityProfileFactory, JobFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 2, 10, 10)
DEADLINE = date(2026, 3, 20)


@pytest.fixture
def maintainer(db):
    return UserFactory(username="maintainer", is_staff=True)


@pytest.fixture
def budgeted(default_profile):
    default_profile.gpu_hours_per_week = Decimal(20)
    default_profile.gpus_at_once = 1
    default_profile.save()
    return default_profile


def ask(user, kind=LimitKind.BUDGET, *, now=NOW, **kwargs):
    kwargs.setdefault("until", DEADLINE)
    kwargs.setdefault("reason", "Thesis deadline on the 20th; the ablations need two GPUs.")
    if kind == LimitKind.BUDGET:
        kwargs.setdefault("gpu_hours_per_week", 60)
    return limit_request_create(user=user, kind=kind, now=now, **kwargs)


def grant(user, maintainer, kind=LimitKind.BUDGET, *, now=NOW, **kwargs):
    return limit_request_approve(request=ask(user, kind, now=now, **kwargs), by=maintainer, now=now)


def test_a_student_asks_with_a_reason_until_a_day(student):
    request = ask(student)
    assert request.status == LimitRequest.Status.PENDING and request.gpu_hours_per_week == Decimal(60)
    # Until a day means through that day, in the lab's time zone.
    assert request.ends_at == local(2026, 3, 21)


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        (LimitKind.BUDGET, {"gpu_hours_per_week": -3}, "Enter a number above 0."),
        (LimitKind.BUDGET, {"gpu_hours_per_week": "lots"}, "Enter a number."),
        (LimitKind.BUDGET, {"gpu_hours_per_week": None}, "How many GPU-hours"),
        (LimitKind.BUDGET, {"until": date(2026, 3, 1)}, "must not be in the past"),
        (LimitKind.BUDGET, {"until": date(2026, 12, 1)}, "at most 120 days"),
        (LimitKind.BUDGET, {"reason": "   "}, "Say why"),
        (LimitKind.CAPS, {}, "at least one cap"),
        (LimitKind.CAPS, {"gpus_at_once": "1.5"}, "whole number"),
        (LimitKind.PROFILE, {}, "Choose a profile."),
        (LimitKind.PROFILE, {"profile": "no-such-profile"}, "No such profile."),
        ("more", {}, "Choose a kind"),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_is_stored(student, kind, kwargs, message):
    with pytest.raises(ValidationError) as error:
        ask(student, kind, **kwargs)
    assert any(message in text for text in error.value.messages)
    assert not LimitRequest.objects.exists()


def test_asking_for_ones_own_profile_is_refused(student, default_profile):
    with pytest.raises(ValidationError, match="your profile already"):
        ask(student, LimitKind.PROFILE, profile=default_profile)


def test_approving_makes_a_grant_until_the_asked_end_and_tells_the_student(student, maintainer):
    request = ask(student)
    made = limit_request_approve(request=request, by=maintainer, note="Good luck with the thesis.", now=NOW)

    request.refresh_from_db()
    assert (request.status, request.decided_by, request.note) == (
        "approved",
        maintainer,
        "Good luck with the thesis.",
    )
    assert (made.user, made.starts_at, made.ends_at, made.gpu_hours_per_week) == (
        student,
        NOW,
        local(2026, 3, 21),
        Decimal(60),
    )
    notice = Notification.objects.get(user=student, kind=NotificationKind.LIMIT_ANSWERED)
    assert "approved" in notice.title and "Good luck with the thesis." in notice.body
    assert "until the end of 2026-03-20" in notice.body
    with pytest.raises(ValidationError, match="approved already"):
        limit_request_deny(request=request, by=maintainer, now=NOW)
    assert LimitGrant.objects.count() == 1


def test_denying_grants_nothing_and_tells_the_student_with_the_note(student, maintainer):
    request = ask(student)
    limit_request_deny(request=request, by=maintainer, note="Ask again after the conference.", now=NOW)
    assert not LimitGrant.objects.exists()
    notice = Notification.objects.get(user=student, kind=NotificationKind.LIMIT_ANSWERED)
    assert "denied" in notice.title and "after the conference" in notice.body


def test_a_request_whose_last_day_passed_cannot_be_approved(student, maintainer):
    request = ask(student)
    with pytest.raises(ValidationError, match="last day has passed"):
        limit_request_approve(request=request, by=maintainer, now=local(2026, 3, 22))
    assert not LimitGrant.objects.exists()


def test_a_granted_budget_and_cap_raise_the_profiles_and_end_by_themselves(student, maintainer, budgeted):
    assert limits_for(user=student, now=NOW).gpu_hours_per_week == Decimal(20)
    grant(student, maintainer)
    grant(student, maintainer, LimitKind.CAPS, gpus_at_once=2)

    during = limits_for(user=student, now=NOW + timedelta(days=1))
    assert (during.gpu_hours_per_week, during.gpus_at_once) == (Decimal(60), 2)
    after = limits_for(user=student, now=local(2026, 3, 21))
    assert (after.gpu_hours_per_week, after.gpus_at_once) == (Decimal(20), 1)


def test_a_grant_never_turns_no_limit_into_a_limit(student, maintainer, default_profile):
    grant(student, maintainer)
    assert limits_for(user=student, now=NOW).gpu_hours_per_week is None


def test_a_granted_profile_gives_its_maxima_and_usage_limits_for_the_period(student, maintainer, host):
    big = CapabilityProfileFactory(name="thesis", gpus=2, cpus=16, gpu_hours_per_week=Decimal(100))
    assert capability_for(user=student, host=host, now=NOW).gpus == 1
    grant(student, maintainer, LimitKind.PROFILE, profile=big, now=NOW)

    later = NOW + timedelta(hours=1)
    assert capability_for(user=student, host=host, now=later).gpus == 2
    assert capability_for(user=student, host=host, now=later).cpus == 16
    assert capabilities_for(users=[student], hosts=[host], now=later)[(student.pk, host.pk)].gpus == 2
    assert capability_for(user=student, host=host, now=local(2026, 3, 21)).gpus == 1
    assert limits_for(user=student, now=NOW + timedelta(hours=1)).gpu_hours_per_week == Decimal(100)
    assert limits_for(user=student, now=local(2026, 3, 21)).gpu_hours_per_week is None


def test_a_granted_profile_follows_the_bookings_per_request_maxima_until_ended(student, maintainer, host):
    # The booking rules ask capability_for at the real time: a grant made now applies now.
    big = CapabilityProfileFactory(name="thesis", gpus=2)
    made = grant(
        student, maintainer, LimitKind.PROFILE, profile=big, now=timezone.now(), until=timezone.localdate()
    )
    assert capability_for(user=student, host=host).gpus == 2
    limit_grant_end_now(grant=made)
    assert capability_for(user=student, host=host).gpus == 1


def test_a_boost_lowers_the_students_fair_share_usage_so_their_job_goes_first(student, maintainer, host):
    heavy_rival = UserFactory(username="rival")
    for user, hours, gpu in ((student, 10, 0), (heavy_rival, 6, 1)):
        ReservationFactory(
            user=user,
            host=host,
            start=NOW - timedelta(hours=hours + 1),
            end=NOW - timedelta(hours=1),
            status="ended",
            gpus=[host.gpus.get(index=gpu)],
        )
    JobFactory(user=student, submitted_at=NOW)
    JobFactory(user=heavy_rival, submitted_at=NOW - timedelta(minutes=5))
    assert [job.user_id for job in fair_share_order(queued_rows(), NOW)] == [heavy_rival.pk, student.pk]

    grant(student, maintainer, LimitKind.BOOST)

    assert priority_factors(now=NOW + timedelta(minutes=1)) == {student.pk: 0.5}
    usage = priority_usage(now=NOW + timedelta(minutes=1))
    assert usage[student.pk] < usage[heavy_rival.pk]
    assert [job.user_id for job in fair_share_order(queued_rows(), NOW + timedelta(minutes=1))] == [
        student.pk,
        heavy_rival.pk,
    ]


def test_the_expiry_task_marks_ended_grants_and_tells_each_student_once(student, maintainer):
    made = grant(student, maintainer)
    assert limit_grants_expire(now=local(2026, 3, 20, 23)) == 0

    assert limit_grants_expire(now=local(2026, 3, 21)) == 1
    assert limit_grants_expire(now=local(2026, 3, 21, 1)) == 0
    made.refresh_from_db()
    assert made.ended_at == local(2026, 3, 21)
    assert Notification.objects.filter(user=student, kind=NotificationKind.GRANT_EXPIRED).count() == 1
    assert "ended" in expire_limit_grants()


def test_ending_a_grant_that_ended_is_refused(student, maintainer):
    made = grant(student, maintainer)
    with pytest.raises(ValidationError, match="ended already"):
        limit_grant_end_now(grant=made, now=ends_at_for(DEADLINE) + timedelta(minutes=1))


def test_a_student_has_a_bounded_number_of_pending_requests(student):
    for _ in range(5):
        ask(student)
    with pytest.raises(ValidationError, match="waiting for an answer"):
        ask(student)
    assert LimitRequest.objects.count() == 5
