"""Hold and release of a queued job: the scheduler skips a held job ("waiting: held"),
released it takes back its place in fair-share order (its submit time stays); the page,
the API and the admin reach the same services; another user's job answers 404."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from jobs.models import Job, WaitReason
from jobs.scheduling import run_pass
from jobs.selectors import queue_positions
from jobs.services import job_hold, job_release, job_submit
from tests.api_helpers import token_client
from tests.factories import UserFactory, local

pytestmark = pytest.mark.django_db
NOW = local(2026, 3, 2, 10, 10)


@pytest.fixture(autouse=True)
def _no_usage_limits(settings):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 0


def submit(user, *, at=NOW) -> Job:
    return job_submit(
        user=user, command="python train.py", cpus=1, memory_gb=1, gpu_count=1, time_limit_minutes=60, now=at
    )


def fresh(job: Job) -> Job:
    job.refresh_from_db()
    return job


def test_a_held_job_is_skipped_with_the_reason_held(student, host):
    job = submit(student)
    job_hold(job=job, by=student, now=NOW)
    report = run_pass(now=NOW)
    assert report.started == []
    job = fresh(job)
    assert job.status == Job.Status.QUEUED
    assert job.wait_reason == WaitReason.HELD
    assert job.waiting_for == "held"
    assert job.pk not in queue_positions(now=NOW)


def test_released_it_takes_back_its_place_before_later_jobs(student, host):
    first = submit(student)
    second = submit(student, at=NOW + timedelta(minutes=5))
    job_hold(job=first, by=student, now=NOW)
    assert queue_positions(now=NOW) == {second.pk: 1}
    job_release(job=first)
    assert queue_positions(now=NOW) == {first.pk: 1, second.pk: 2}
    assert fresh(first).submitted_at == NOW
    assert fresh(first).wait_reason == WaitReason.NONE


def test_only_a_queued_job_can_be_held(student, host):
    job = submit(student)
    run_pass(now=NOW)
    assert fresh(job).status == Job.Status.STARTING
    with pytest.raises(ValidationError, match="Only a queued job can be held"):
        job_hold(job=job, by=student, now=NOW)


def test_the_page_holds_and_releases_the_owners_job(client, student, host):
    job = submit(student)
    client.force_login(student)
    client.post(reverse("job-hold", kwargs={"pk": job.pk}))
    assert fresh(job).held_at is not None
    page = client.get(reverse("job-detail", kwargs={"pk": job.pk}))
    assert 'data-testid="job-release"' in page.content.decode()
    client.post(reverse("job-release", kwargs={"pk": job.pk}))
    assert fresh(job).held_at is None


def test_another_users_job_answers_404_on_the_page_and_the_api(client, student, host):
    job = submit(student)
    other = UserFactory(username="other")
    client.force_login(other)
    assert client.post(reverse("job-hold", kwargs={"pk": job.pk})).status_code == 404
    api = token_client(other)
    assert api.post(f"/api/v1/jobs/{job.pk}/hold/").status_code == 404
    assert api.post(f"/api/v1/jobs/{job.pk}/release/").status_code == 404
    assert fresh(job).held_at is None


def test_the_api_holds_and_releases(student, host):
    job = submit(student)
    api = token_client(student)
    held = api.post(f"/api/v1/jobs/{job.pk}/hold/")
    assert held.status_code == 200
    assert held.json()["held"] is True
    assert held.json()["waiting_for"] == "held"
    released = api.post(f"/api/v1/jobs/{job.pk}/release/")
    assert released.json()["held"] is False
    job.status = Job.Status.CANCELLED
    job.finished_at = NOW
    job.save()
    refused = api.post(f"/api/v1/jobs/{job.pk}/hold/")
    assert refused.status_code == 400
    assert "Only a queued job can be held" in str(refused.json())


def test_maintainers_hold_and_release_in_admin(admin_client, student, host):
    job = submit(student)
    changelist = reverse("admin:jobs_job_changelist")
    admin_client.post(changelist, {"action": "hold", "_selected_action": [job.pk]})
    assert fresh(job).held_at is not None
    admin_client.post(changelist, {"action": "release", "_selected_action": [job.pk]})
    assert fresh(job).held_at is None
