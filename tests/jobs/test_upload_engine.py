"""A DoPQ zip on the real Docker engine: its Dockerfile (FROM the offline test image, a RUN
and a CMD) is built by the host's agent, the job runs the image and succeeds with the
image's output in its log; a bad zip beside it fails on its own and stops nothing."""

import contextlib
import time
import uuid

import pytest
from django.utils import timezone

from containers.tasks import reconcile
from jobs import logs
from jobs.models import Job, JobBuild
from jobs.scheduling import run_pass
from jobs.services import job_submit_upload
from jobs.tasks import build_job_image
from tests.factories import UserFactory
from tests.jobs.conftest import builds_fenced
from tests.jobs.dopq_zips import DOCKERFILE, dopq_zip

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def builds_on(settings, tmp_path):
    builds_fenced(settings, tmp_path)
    settings.JOB_BUILD_TIMEOUT_S = 120


@pytest.fixture
def built_images(docker_client):
    """Removes the images this test built (and only those)."""
    import docker

    tags: list[str] = []
    yield tags
    for tag in tags:
        # The failing zip built nothing: its tag is not there.
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


def until_finished(job: Job, *, timeout_s: float = 30) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run_pass(now=timezone.now())
        reconcile(wake=False)
        job = Job.objects.get(pk=job.pk)
        if job.is_finished:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job #{job.pk} still {job.status} after {timeout_s} s")


def test_a_zip_upload_builds_and_runs_beside_a_bad_one(
    engine_host, docker_scope, test_image, default_profile, built_images, docker_client
):
    user = UserFactory(username="m11007s05")
    # A line of this run's own, so parallel runs never share a tag.
    marker = f"RUN echo {uuid.uuid4().hex} > /run-id\n"
    bad_zip = dopq_zip(name="broken", dockerfile=DOCKERFILE + marker + "RUN exit 7\n")
    good_zip = dopq_zip(folder="project", dockerfile=DOCKERFILE + marker)
    bad = job_submit_upload(user=user, upload=bad_zip, host=engine_host, cpus=1, time_limit_minutes=5)
    good = job_submit_upload(user=user, upload=good_zip, host=engine_host, cpus=1, time_limit_minutes=5)
    built_images.extend([bad.image.reference, good.image.reference])

    assert build_job_image(bad.pk).startswith("build failed")
    assert build_job_image(good.pk).startswith("built")

    bad.refresh_from_db()
    assert bad.status == Job.Status.FAILED and "could not be built" in bad.status_message
    assert "returned a non-zero code: 7" in bad.build.message
    good_image = docker_client.images.get(good.image.reference)
    assert good_image.labels.get("aivc.job") == str(good.pk)

    good = until_finished(good)
    assert (good.status, good.exit_code) == (Job.Status.SUCCEEDED, 0), good.status_message
    log = logs.log_tail(job_id=good.pk, lines=10)
    assert "built in the image" in log and "hello from dopq" in log
    assert JobBuild.objects.get(job=good).status == JobBuild.Status.BUILT
    assert "Successfully" in logs.log_tail(job_id=good.pk, lines=20, build=True)


def test_a_build_past_its_time_limit_fails_its_job(
    engine_host, docker_scope, test_image, default_profile, built_images, settings
):
    settings.JOB_BUILD_TIMEOUT_S = 3
    user = UserFactory(username="m11007s05")
    slow = f"RUN echo {uuid.uuid4().hex} > /run-id && sleep 20\n"
    job = job_submit_upload(
        user=user,
        upload=dopq_zip(dockerfile=DOCKERFILE + slow),
        host=engine_host,
        cpus=1,
        time_limit_minutes=5,
    )
    built_images.append(job.image.reference)
    started = time.monotonic()
    assert build_job_image(job.pk).startswith("build failed")
    assert time.monotonic() - started < 15
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "longer than 3 s" in job.status_message
