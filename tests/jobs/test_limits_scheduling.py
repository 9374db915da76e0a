"""Caps at once and the GPU-hour budget in the scheduling pass: a job over its owner's
limit waits, says why, and never holds up other users' jobs behind it."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from bookings.models import Reservation
from jobs.models import Job, WaitReason
from jobs.scheduling import run_pass
from jobs.services import job_finish, job_submit
from tests.api_helpers import token_client
from tests.factories import HostFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 2, 10, 10)
HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _limits(default_profile, settings):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 0
    default_profile.gpus = 2
    default_profile.gpus_at_once = 2
    default_profile.save()
    return default_profile


@pytest.fixture
def big_host(db):
    return HostFactory(name="gpu-big", cpus=64, ram_gb=256, swap_gb=0, gpus=8)


def submit(user, minutes=60, gpus=1, now=NOW):
    return job_submit(
        user=user,
        command="python train.py",
        cpus=1,
        memory_gb=1,
        gpu_count=gpus,
        time_limit_minutes=minutes,
        now=now,
    )


def fresh(job: Job) -> Job:
    job.refresh_from_db()
    return job


def test_six_one_gpu_jobs_hold_no_more_gpus_than_the_cap(student, big_host, image):
    jobs = [submit(student) for _ in range(6)]
    report = run_pass(now=NOW)
    assert report.started == [job.pk for job in jobs[:2]]
    waiting = fresh(jobs[2])
    assert waiting.status == Job.Status.QUEUED
    assert waiting.wait_reason == WaitReason.GPUS_AT_ONCE
    assert "you hold 2 of 2 at once until 2026-03-02 11:10" in waiting.wait_detail
    # Its planned start is when the user's first jobs end.
    assert waiting.planned_start == NOW + HOUR


def test_a_booking_and_jobs_together_stay_under_the_cap(student, big_host, image):
    ReservationFactory(user=student, host=big_host, start=NOW - HOUR, end=NOW + 5 * HOUR, gpu_count=1)
    first, second = submit(student), submit(student)
    assert run_pass(now=NOW).started == [first.pk]
    assert fresh(second).wait_reason == WaitReason.GPUS_AT_ONCE


def test_a_capped_users_jobs_never_hold_up_another_users_job_behind_them(student, image):
    host = HostFactory(name="small", cpus=16, ram_gb=64, gpus=2)
    hoarder_jobs = [submit(student) for _ in range(3)]
    light = UserFactory(username="light")
    # Submitted later, so behind the hoarder's jobs at equal fair share.
    light_job = submit(light, now=NOW + timedelta(minutes=1))
    run_pass(now=NOW)
    started = Job.objects.filter(status=Job.Status.STARTING)
    # The hoarder's first two take both GPUs; the third waits on the cap, not as the head.
    assert set(started.values_list("pk", flat=True)) == {hoarder_jobs[0].pk, hoarder_jobs[1].pk}
    assert fresh(hoarder_jobs[2]).wait_reason == WaitReason.GPUS_AT_ONCE
    assert fresh(light_job).wait_reason == WaitReason.CAPACITY
    # When one GPU frees, the light user's job takes it, not the capped hoarder's.
    job_finish(job=fresh(hoarder_jobs[0]), status=Job.Status.SUCCEEDED, now=NOW + timedelta(minutes=5))
    report = run_pass(now=NOW + timedelta(minutes=5))
    assert report.started == [light_job.pk]
    assert host.pk == fresh(light_job).reservation.host_id
    assert fresh(light_job).wait_reason == WaitReason.NONE


def test_a_job_over_the_weekly_budget_waits_and_says_when_it_fits(student, big_host, image, _limits):
    _limits.gpus_at_once = None
    _limits.gpu_hours_per_week = 10
    _limits.save()
    ReservationFactory(
        user=student,
        host=big_host,
        start=NOW - 2 * HOUR,
        end=NOW - HOUR,
        gpu_count=2,
        status=Reservation.Status.ENDED,
    )
    fits, over = submit(student, minutes=6 * 60), submit(student, minutes=3 * 60)
    assert run_pass(now=NOW).started == [fits.pk]
    waiting = fresh(over)
    assert waiting.wait_reason == WaitReason.BUDGET
    assert "10 GPU-hours per 7 days" in waiting.wait_detail
    # 2 + 6 + 3 GPU-hours in one week: it fits once the week that begins with the booking
    # holds no more than 2 hours of the job.
    assert waiting.planned_start == NOW + timedelta(days=7) - timedelta(hours=4)


def test_a_job_bigger_than_the_cap_or_the_budget_is_refused_at_submit(student, big_host, image, _limits):
    _limits.gpu_hours_per_week = 20
    _limits.gpus = 4
    _limits.save()
    with pytest.raises(ValidationError, match="your GPUs at once"):
        submit(student, gpus=3)
    with pytest.raises(ValidationError, match="more than your 20 GPU-hours"):
        submit(student, gpus=1, minutes=21 * 60)


def test_other_users_are_not_limited_by_a_users_cap(student, big_host, image):
    other = UserFactory(username="other")
    for user in (student, other):
        submit(user, gpus=2)
    assert len(run_pass(now=NOW).started) == 2


def test_the_job_page_and_the_api_say_what_holds_a_waiting_job(client, student, big_host, image):
    jobs = [submit(student) for _ in range(3)]
    run_pass(now=NOW)
    client.force_login(student)
    page = client.get(reverse("job-detail", args=[jobs[2].pk])).content.decode()
    assert "your GPUs at once: you hold 2 of 2 at once until 2026-03-02 11:10" in page
    body = token_client(student).get(f"/api/v1/jobs/{jobs[2].pk}/").json()
    assert body["wait_reason"] == "gpus_at_once" and body["waiting_for"].startswith("your GPUs at once")
    assert body["planned_start"] is not None
