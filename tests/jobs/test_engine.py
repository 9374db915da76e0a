"""Batch jobs on the real Docker engine (deploy/test-engine/setup.sh): a job that prints and
exits 0, one that exits 3, and one that outlives its time limit and ignores SIGTERM; the
same on the lab image (`make lab-image`), whose entrypoint runs them in its job mode."""

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from bookings.models import GpuAllocation, Reservation
from containers.tasks import reconcile
from jobs import logs
from jobs.models import Job
from jobs.scheduling import run_pass
from jobs.services import job_submit
from tests.factories import UserFactory

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
JobStatus = Job.Status


@pytest.fixture(autouse=True)
def job_logs(settings, tmp_path):
    settings.JOB_LOG_ROOT = tmp_path / "job-logs"
    settings.JOB_STOP_GRACE_S = 2


@pytest.fixture
def run_job(engine_host, docker_scope, test_image, default_profile):
    return job_runner(host=engine_host, image=test_image)


@pytest.fixture
def run_lab_job(engine_host, docker_scope, lab_image, default_profile):
    return job_runner(host=engine_host, image=lab_image)


def job_runner(*, host, image):
    """Submits a job and runs the scheduler's pass and one reconcile tick."""
    user = UserFactory(username="m11007s05")

    def run(command: str, *, minutes: int = 5) -> Job:
        job = job_submit(
            user=user,
            command=command,
            cpus=1,
            memory_gb=1,
            gpu_count=0,
            time_limit_minutes=minutes,
            host=host,
            image=image,
        )
        run_pass(now=timezone.now())
        reconcile(wake=False)
        return Job.objects.select_related("reservation").get(pk=job.pk)

    return run


def until_finished(job: Job, *, timeout_s: float = 30) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reconcile(wake=False)
        job = Job.objects.select_related("reservation").get(pk=job.pk)
        if job.is_finished:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job #{job.pk} still {job.status} after {timeout_s} s")


def test_a_job_that_prints_and_exits_0_succeeds_with_its_output(
    run_job, engine_host, docker_client, docker_scope
):
    job = run_job("sh -c 'echo hello from job; echo result > \"$JOB_OUTPUT/out.txt\"'")
    job = until_finished(job)
    assert (job.status, job.exit_code) == (JobStatus.SUCCEEDED, 0), job.status_message
    assert "hello from job" in logs.log_tail(job_id=job.pk, lines=10)
    assert (
        Path(engine_host.work_root) / "m11007s05" / "jobs" / str(job.pk) / "out.txt"
    ).read_text() == "result\n"
    assert docker_client.containers.list(all=True, filters={"label": f"aivc.managed={docker_scope}"}) == []
    assert job.reservation.status == Reservation.Status.ENDED


def test_a_job_that_exits_3_fails_with_its_code(run_job):
    job = until_finished(run_job("sh -c 'echo oops >&2; exit 3'"))
    assert (job.status, job.exit_code) == (JobStatus.FAILED, 3)
    assert "oops" in logs.log_tail(job_id=job.pk, lines=10)


def test_a_job_that_outlives_its_limit_is_stopped_as_timed_out(run_job, docker_client):
    job = run_job("sh -c 'trap \"\" TERM; echo working; while true; do sleep 1; done'")
    assert_stopped_at_its_limit(job, docker_client=docker_client)


def assert_stopped_at_its_limit(job: Job, *, docker_client) -> None:
    assert job.status == JobStatus.RUNNING, job.status_message
    container_id = job.reservation.container_id
    # Its time limit passes now: the window is moved back rather than waited out.
    now = timezone.now()
    window = {"start": now - timedelta(minutes=5), "end": now - timedelta(seconds=1)}
    Reservation.objects.filter(pk=job.reservation_id).update(**window)
    GpuAllocation.objects.filter(reservation_id=job.reservation_id).update(**window)
    began = time.monotonic()
    reconcile(wake=False)
    stopped_in = time.monotonic() - began
    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.TIMED_OUT
    assert job.exit_code == 137  # ignored SIGTERM, killed after the grace period
    assert 2 <= stopped_in < 20
    assert "working" in logs.log_tail(job_id=job.pk, lines=10)
    assert not docker_client.containers.list(all=True, filters={"id": container_id})


# The lab image: its entrypoint would run sshd (and stop without host keys) unless the
# portal sets its job mode; the command is then the container's main process.


def test_a_job_on_the_lab_image_prints_and_exits_0(run_lab_job, engine_host):
    job = until_finished(
        run_lab_job(
            'sh -c \'echo hello from the lab image; python3 -c "print(6 * 7)" > "$JOB_OUTPUT/out.txt"\''
        )
    )
    assert (job.status, job.exit_code) == (JobStatus.SUCCEEDED, 0), job.status_message
    assert "hello from the lab image" in logs.log_tail(job_id=job.pk, lines=10)
    assert (
        Path(engine_host.work_root) / "m11007s05" / "jobs" / str(job.pk) / "out.txt"
    ).read_text() == "42\n"


def test_a_job_on_the_lab_image_that_exits_3_fails_with_its_code(run_lab_job):
    job = until_finished(run_lab_job("sh -c 'echo oops >&2; exit 3'"))
    assert (job.status, job.exit_code) == (JobStatus.FAILED, 3)
    assert "oops" in logs.log_tail(job_id=job.pk, lines=10)


def test_a_job_on_the_lab_image_that_outlives_its_limit_is_timed_out(run_lab_job, docker_client):
    job = run_lab_job("sh -c 'trap \"\" TERM; echo working; while true; do sleep 1; done'")
    assert_stopped_at_its_limit(job, docker_client=docker_client)


@pytest.mark.django_db(transaction=True)
def test_jobs_at_their_limit_together_are_stopped_side_by_side(run_job, settings):
    # Started in one pass, they reach their limit in one tick; each ignores SIGTERM, so each
    # stop waits out the grace period. One after another, the host's bookings would wait
    # for all of them.
    settings.AGENT_LAUNCH_WORKERS = 4
    jobs = [run_job("sh -c 'trap \"\" TERM; while true; do sleep 1; done'") for _ in range(4)]
    assert [job.status for job in jobs] == [JobStatus.RUNNING] * 4
    now = timezone.now()
    window = {"start": now - timedelta(minutes=5), "end": now - timedelta(seconds=1)}
    ids = [job.reservation_id for job in jobs]
    Reservation.objects.filter(pk__in=ids).update(**window)
    GpuAllocation.objects.filter(reservation_id__in=ids).update(**window)
    began = time.monotonic()
    reconcile(wake=False)
    stopped_in = time.monotonic() - began
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.TIMED_OUT}
    # Side by side about one grace period; one after another at least four.
    assert stopped_in < 3 * settings.JOB_STOP_GRACE_S, stopped_in
