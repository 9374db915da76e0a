"""Dependencies (Slurm's afterok, afterany, afternotok) on the user's own jobs: a job waits
for them ("waiting: other jobs it depends on"), starts once they hold, is cancelled with
the reason when one can no longer hold; bad words or another user's job are refused and
nothing is queued."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from jobs.models import Job, JobDependency, WaitReason
from jobs.scheduling import run_pass
from jobs.services import job_finish, job_submit, parse_dependency
from tests.api_helpers import token_client
from tests.factories import UserFactory, local

pytestmark = pytest.mark.django_db
NOW = local(2026, 3, 2, 10, 10)


@pytest.fixture(autouse=True)
def _no_usage_limits(settings):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 0


def submit(user, dependency: str = "") -> Job:
    return job_submit(
        user=user,
        command="python train.py",
        cpus=1,
        memory_gb=1,
        gpu_count=0,
        time_limit_minutes=60,
        dependency=dependency,
        now=NOW,
    )


def fresh(job: Job) -> Job:
    job.refresh_from_db()
    return job


def started(job: Job) -> Job:
    run_pass(now=NOW)
    return fresh(job)


def test_the_slurm_words_parse():
    assert parse_dependency("afterok:1:2,afterany:3 afternotok:4") == [
        ("afterok", 1),
        ("afterok", 2),
        ("afterany", 3),
        ("afternotok", 4),
    ]
    for bad in ("after:1", "afterok", "afterok:x", "afterok:-1", "afterok:1;rm"):
        with pytest.raises(ValidationError, match="Write dependencies as"):
            parse_dependency(bad)


def test_an_afterok_job_waits_then_starts_when_its_dependency_succeeds(student, host):
    first = started(submit(student))
    second = submit(student, f"afterok:{first.pk}")
    second = started(second)
    assert second.status == Job.Status.QUEUED
    assert second.wait_reason == WaitReason.DEPENDENCY
    assert second.waiting_for == f"other jobs it depends on: job #{first.pk}"
    job_finish(job=first, status=Job.Status.SUCCEEDED, exit_code=0, now=NOW)
    assert started(second).status == Job.Status.STARTING


def test_an_afterok_job_is_cancelled_with_the_reason_when_its_dependency_fails(student, host):
    first = started(submit(student))
    second = submit(student, f"afterok:{first.pk}")
    job_finish(job=first, status=Job.Status.FAILED, exit_code=1, now=NOW)
    second = started(second)
    assert second.status == Job.Status.CANCELLED
    assert f"afterok:{first.pk} can no longer be met" in second.status_message


def test_afternotok_and_afterany_follow_a_failure(student, host):
    first = started(submit(student))
    on_failure = submit(student, f"afternotok:{first.pk}")
    either = submit(student, f"afterany:{first.pk}")
    job_finish(job=first, status=Job.Status.FAILED, exit_code=1, now=NOW)
    run_pass(now=NOW)
    assert fresh(on_failure).status == Job.Status.STARTING
    assert fresh(either).status == Job.Status.STARTING


def test_another_users_job_is_refused_as_unknown_and_nothing_is_queued(student, host):
    theirs = submit(UserFactory(username="other"))
    with pytest.raises(ValidationError, match=f"You have no job #{theirs.pk}"):
        submit(student, f"afterok:{theirs.pk}")
    assert not Job.objects.filter(user=student).exists()
    assert not JobDependency.objects.exists()


def test_a_dependency_that_already_cannot_hold_is_refused(student, host):
    first = started(submit(student))
    job_finish(job=first, status=Job.Status.SUCCEEDED, exit_code=0, now=NOW)
    with pytest.raises(ValidationError, match="can never hold"):
        submit(student, f"afternotok:{first.pk}")
    assert Job.objects.filter(user=student).count() == 1


def test_the_api_and_the_form_take_a_dependency(client, student, host, image):
    first = submit(student)
    body = {"command": "python x.py", "cpus": 1, "memory_gb": 1, "gpu_count": 0, "time_limit_minutes": 30}
    api = token_client(student)
    created = api.post("/api/v1/jobs/", body | {"dependency": f"afterany:{first.pk}"}, format="json")
    assert created.status_code == 201
    assert JobDependency.objects.filter(job_id=created.json()["id"], on=first).exists()
    refused = api.post("/api/v1/jobs/", body | {"dependency": "afterok:999999"}, format="json")
    assert refused.status_code == 400
    assert "You have no job #999999" in str(refused.json())
    client.force_login(student)
    page = client.post(reverse("job-new"), body | {"image": image.pk, "dependency": "afterwards:1"})
    assert "Write dependencies as" in page.content.decode()
    assert Job.objects.filter(user=student).count() == 2
