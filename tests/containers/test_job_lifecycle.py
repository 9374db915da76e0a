"""Batch jobs in the reconcile tick, against the fake runtime: launch, exit, time limit,
cancel, and engine errors that never drop a job silently."""

import os
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bookings.capacity import gpus_free
from bookings.models import GpuAllocation, Reservation
from containers.fake_runtime import FakeRuntime
from containers.lifecycle import reconcile
from containers.models import ContainerEvent
from containers.specs import LABEL_JOB, ContainerSpec, ContainerState, scope_labels
from jobs import logs
from jobs.models import Job
from jobs.scheduling import run_pass
from jobs.services import job_cancel, job_submit
from tests.factories import ImageFactory, UserFactory

pytestmark = pytest.mark.django_db
JobStatus = Job.Status


@pytest.fixture(autouse=True)
def job_logs(settings, tmp_path):
    settings.JOB_LOG_ROOT = tmp_path / "job-logs"


@pytest.fixture
def started_job(engine_host, fake_runtime, default_profile):
    """A job the scheduler has just given its capacity, due to launch."""
    ImageFactory(reference="lab/trainer:1", is_default=True)
    user = UserFactory(username="m11007s05")
    job = job_submit(
        user=user,
        command="python -c 'print(42)' --out \"$JOB_OUTPUT\"",
        cpus=2,
        memory_gb=4,
        gpu_count=1,
        time_limit_minutes=30,
        host=engine_host,
    )
    run_pass(now=timezone.now())
    job.refresh_from_db()
    assert job.status == JobStatus.STARTING
    return job


def engine_of(job: Job):
    return FakeRuntime.engine_for(job.reservation.host)


def only_spec(job: Job) -> ContainerSpec:
    [(_, spec)] = engine_of(job).containers.values()
    return spec


def fresh(job: Job) -> Job:
    return Job.objects.select_related("reservation").get(pk=job.pk)


def job_events(job: Job, **filters) -> list[ContainerEvent]:
    return list(ContainerEvent.objects.filter(reservation=job.reservation, **filters).order_by("pk"))


def test_it_runs_the_job_command_as_arguments_with_what_was_held(started_job, engine_host, roots):
    reconcile()
    job = fresh(started_job)
    spec = only_spec(job)
    assert spec.name == f"aivc-m11007s05-job-{job.pk}"
    assert spec.command == ["python", "-c", "print(42)", "--out", "$JOB_OUTPUT"]
    assert spec.ssh_port is None
    held = sorted(job.reservation.allocations.select_related("gpu"), key=lambda a: a.gpu.index)
    assert spec.gpu_ids == [allocation.gpu.uuid for allocation in held]
    assert spec.nano_cpus == 2 * 10**9
    assert spec.environment["JOB_OUTPUT"] == f"/root/Work/jobs/{job.pk}"
    assert spec.labels[LABEL_JOB] == str(job.pk)
    assert {(m.target, m.read_only) for m in spec.mounts} >= {
        ("/root", False),  # the persistent home: its virtualenvs
        ("/root/Work", False),
        ("/root/Dataset", True),
    }
    assert "/root/Backup" not in {m.target for m in spec.mounts}
    assert spec.cpu_count == 2 and spec.environment["OMP_NUM_THREADS"] == "2"
    assert "AIVC_MODE" not in spec.environment  # not a lab image: its command runs as is
    assert (roots["work"] / "m11007s05" / "jobs" / str(job.pk)).is_dir()
    assert job.status == JobStatus.RUNNING and job.reservation.status == Reservation.Status.RUNNING


def test_a_job_on_a_lab_image_runs_in_the_entrypoints_job_mode(started_job, roots):
    started_job.image.lab_modes = True
    started_job.image.save(update_fields=["lab_modes"])
    reconcile()
    spec = only_spec(fresh(started_job))
    assert spec.environment["AIVC_MODE"] == "job"
    assert spec.command == ["python", "-c", "print(42)", "--out", "$JOB_OUTPUT"]


def test_exit_zero_succeeds_keeps_the_output_and_frees_the_capacity(started_job):
    reconcile()
    engine_of(started_job).exit(f"aivc-m11007s05-job-{started_job.pk}", code=0, output=b"42\n")
    reconcile()
    job = fresh(started_job)
    assert (job.status, job.exit_code) == (JobStatus.SUCCEEDED, 0)
    assert job.reservation.status == Reservation.Status.ENDED and job.reservation.end <= timezone.now()
    assert engine_of(job).containers == {}
    assert logs.log_tail(job_id=job.pk, lines=10) == "42"
    [finished] = job_events(job, sign="JobFinished")
    assert finished.level == "INFO" and "exit code 0" in finished.message and finished.user == job.user


def test_a_non_zero_exit_fails_the_job_with_its_code(started_job):
    reconcile()
    engine_of(started_job).exit(f"aivc-m11007s05-job-{started_job.pk}", code=3, output=b"Traceback\n")
    reconcile()
    job = fresh(started_job)
    assert (job.status, job.exit_code) == (JobStatus.FAILED, 3)
    [finished] = job_events(job, sign="JobFinished")
    assert finished.level == "WARNING" and "exit code 3" in finished.message


def test_it_stops_a_job_at_its_time_limit_as_timed_out(started_job):
    reconcile()
    now = timezone.now()
    Reservation.objects.filter(pk=started_job.reservation_id).update(
        start=now - timedelta(minutes=30), end=now - timedelta(seconds=1)
    )
    GpuAllocation.objects.filter(reservation_id=started_job.reservation_id).update(
        start=now - timedelta(minutes=30), end=now - timedelta(seconds=1)
    )
    engine_of(started_job).output[f"aivc-m11007s05-job-{started_job.pk}"] = b"epoch 1\n"
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.TIMED_OUT and job.exit_code == 143
    assert engine_of(job).containers == {}
    assert "epoch 1" in logs.log_tail(job_id=job.pk, lines=5)


def test_a_running_job_refreshes_its_stored_log_every_tick(started_job):
    reconcile()
    name = f"aivc-m11007s05-job-{started_job.pk}"
    engine_of(started_job).output[name] = b"step 1\n"
    reconcile()
    assert logs.log_tail(job_id=started_job.pk, lines=5) == "step 1"
    engine_of(started_job).output[name] += b"step 2\n"
    reconcile()
    assert logs.log_tail(job_id=started_job.pk, lines=5) == "step 1\nstep 2"


def test_a_cancelled_job_is_stopped_and_its_log_kept(started_job):
    reconcile()
    engine_of(started_job).output[f"aivc-m11007s05-job-{started_job.pk}"] = b"partial\n"
    job_cancel(job=started_job)
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.CANCELLED
    assert engine_of(job).containers == {}
    assert logs.log_tail(job_id=job.pk, lines=5) == "partial"
    [finished] = job_events(job, sign="JobFinished")
    assert "cancelled" in finished.message and finished.user == job.user


def test_a_missing_image_fails_the_job_with_an_event(started_job):
    engine_of(started_job).images = set()
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.FAILED and "could not start" in job.status_message
    assert job_events(job, sign="JobFinished")


def test_an_engine_refusal_is_retried_then_fails_the_job(started_job, settings):
    settings.CONTAINER_MAX_RESTARTS = 1
    name = f"aivc-m11007s05-job-{started_job.pk}"
    # A container of that name outside the portal's labels: the engine refuses the name.
    stray = ContainerState(id="stray", name=name, status="running", labels={})
    engine_of(started_job).containers["stray"] = (stray, None)
    reconcile()
    assert fresh(started_job).status == JobStatus.STARTING
    assert job_events(started_job, sign="LaunchError")
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.FAILED and "refused its container 2 times" in job.status_message


def test_an_engine_that_does_not_answer_leaves_the_job_waiting(started_job):
    engine_of(started_job).reachable = False
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.STARTING
    engine_of(job).reachable = True
    reconcile()
    assert fresh(job).status == JobStatus.RUNNING


def test_a_symlinked_jobs_folder_is_refused_not_followed(started_job, roots, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    work = roots["work"] / "m11007s05"
    work.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, work / "jobs")
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.FAILED
    assert list(outside.iterdir()) == []


def test_a_booking_beside_a_job_keeps_its_own_container(started_job, engine_host):
    from tests.factories import ReservationFactory

    now = timezone.now()
    booking = ReservationFactory(
        user=started_job.user,
        host=engine_host,
        start=now - timedelta(minutes=1),
        end=now + timedelta(hours=1),
    )
    reconcile()
    names = engine_of(started_job).running_names()
    assert names == sorted(["aivc-m11007s05", f"aivc-m11007s05-job-{started_job.pk}"])
    assert booking.pk and scope_labels(engine_host)


@pytest.fixture
def unwritable_logs(settings, tmp_path):
    """A log root the disk refuses (a file where the folder should be): every save fails."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")

    def refuse() -> None:
        settings.JOB_LOG_ROOT = blocker / "job-logs"

    return refuse


def test_a_running_job_whose_output_cannot_be_saved_keeps_running_and_its_gpus(
    started_job, unwritable_logs, settings
):
    settings.CONTAINER_MAX_RESTARTS = 1
    reconcile()
    unwritable_logs()
    for _ in range(4):
        reconcile()
    job = fresh(started_job)
    assert (job.status, job.reservation.status) == (JobStatus.RUNNING, Reservation.Status.RUNNING)
    assert job.reservation.allocations.filter(active=True).count() == 1
    assert len(engine_of(job).containers) == 1
    [unsaved] = job_events(job, sign="JobLogUnsaved")
    assert unsaved.level == "ERROR" and "could not be saved" in unsaved.message
    assert not job_events(job, sign="UnexpectedError")


def test_a_job_at_its_time_limit_ends_even_when_its_output_cannot_be_saved(started_job, unwritable_logs):
    reconcile()
    unwritable_logs()
    now = timezone.now()
    window = {"start": now - timedelta(minutes=30), "end": now - timedelta(seconds=1)}
    Reservation.objects.filter(pk=started_job.reservation_id).update(**window)
    GpuAllocation.objects.filter(reservation_id=started_job.reservation_id).update(**window)
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.TIMED_OUT
    assert engine_of(job).containers == {}
    assert not job.reservation.is_live


def test_an_unexpected_error_at_launch_fails_the_job_and_frees_its_capacity(started_job, monkeypatch):
    def broken(**kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr("containers.job_lifecycle.job_container_spec", broken)
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.FAILED and "unexpected error" in job.status_message
    assert not job.reservation.is_live
    assert not job.reservation.allocations.filter(active=True, end__gt=timezone.now()).exists()


def test_a_disk_error_at_launch_is_retried_then_fails_the_job(started_job, monkeypatch, settings):
    settings.CONTAINER_MAX_RESTARTS = 1

    def full_disk(reservation, *, job_id):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("containers.job_lifecycle.prepare_job_mounts", full_disk)
    reconcile()
    assert fresh(started_job).status == JobStatus.STARTING
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.FAILED and "No space left" in job.status_message
    assert not job.reservation.is_live


def test_a_running_job_a_maintainer_stops_is_cancelled_not_timed_out(started_job, admin_client):
    reconcile()
    admin_client.post(
        reverse("admin:bookings_reservation_changelist"),
        {"action": "stop_now", "_selected_action": [started_job.reservation_id]},
    )
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.CANCELLED
    assert "stopped before its time limit (A maintainer stopped it.)" in job.status_message
    assert engine_of(job).containers == {}


def test_a_job_a_maintainer_stops_before_its_container_started_is_cancelled(started_job, admin_client):
    admin_client.post(
        reverse("admin:bookings_reservation_changelist"),
        {"action": "stop_now", "_selected_action": [started_job.reservation_id]},
    )
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.CANCELLED and "A maintainer stopped it." in job.status_message
    assert engine_of(job).containers == {}


def test_a_job_reservation_left_live_past_its_window_is_closed_whatever_its_status(started_job):
    # What the cancel racing the start left behind before the fix: the job cancelled, its
    # reservation still scheduled and holding its GPU after its window.
    Job.objects.filter(pk=started_job.pk).update(status=JobStatus.CANCELLED, finished_at=timezone.now())
    over = timezone.now() - timedelta(seconds=1)
    Reservation.objects.filter(pk=started_job.reservation_id).update(
        start=over - timedelta(minutes=30), end=over
    )
    reconcile()
    reservation = Reservation.objects.get(pk=started_job.reservation_id)
    assert reservation.status == Reservation.Status.ENDED
    assert engine_of(started_job).runs == []
    assert not ContainerEvent.objects.filter(reservation=reservation, sign="NeverStarted").exists()


def test_a_running_job_past_its_window_is_left_to_the_job_lifecycle(started_job):
    reconcile()
    over = timezone.now() - timedelta(seconds=1)
    Reservation.objects.filter(pk=started_job.reservation_id).update(
        start=over - timedelta(minutes=30), end=over
    )
    reconcile()
    job = fresh(started_job)
    assert job.status == JobStatus.TIMED_OUT
    assert job.reservation.status == Reservation.Status.ENDED


def _gpus_free_now(job: Job) -> bool:
    gpu_ids = list(
        GpuAllocation.objects.filter(reservation_id=job.reservation_id).values_list("gpu_id", flat=True)
    )
    now = timezone.now()
    return gpus_free(gpu_ids=gpu_ids, start=now, end=now + timedelta(hours=1), exclude_reservation_id=0)


def test_a_cancelled_jobs_gpus_are_not_given_to_the_next_job_while_its_container_runs(
    started_job, engine_host
):
    # The attack on the next job's owner: cancel a running job whose process ignores
    # SIGTERM; until the tick has removed its container it still computes on its GPUs.
    reconcile()
    job_cancel(job=started_job)
    assert engine_of(started_job).containers, "the tick has not stopped it yet"
    assert not _gpus_free_now(started_job)
    waiting = job_submit(
        user=UserFactory(),
        command="python train.py",
        cpus=1,
        memory_gb=1,
        gpu_count=1,
        time_limit_minutes=30,
        host=engine_host,
    )
    run_pass(now=timezone.now())
    cancelled_gpu = GpuAllocation.objects.get(reservation_id=started_job.reservation_id).gpu_id
    given = GpuAllocation.objects.filter(reservation__job=waiting.pk, active=True).values_list(
        "gpu_id", flat=True
    )
    assert cancelled_gpu not in list(given)

    reconcile()
    names = {state.name for state, _ in engine_of(started_job).containers.values()}
    assert f"aivc-m11007s05-job-{started_job.pk}" not in names
    assert _gpus_free_now(started_job)


def test_a_job_cancelled_before_its_container_started_gives_its_gpus_back_at_the_next_tick(started_job):
    job_cancel(job=started_job)
    assert not _gpus_free_now(started_job)
    reconcile()
    assert engine_of(started_job).containers == {}
    assert _gpus_free_now(started_job)
