"""Batch jobs in the reconcile tick. A started job holds a Reservation of kind job; the
lifecycle runs its container like a booking's, but a job's container is never restarted:
its exit ends the job (exit code 0: succeeded, else failed), and at the end of its window
(the time limit) it is stopped, SIGTERM then SIGKILL after JOB_STOP_GRACE_S, as timed out.
Before a job's container is removed its output is stored (jobs.logs), and while it runs
the stored log is refreshed every tick. An engine error never drops a job: a launch the
engine refuses is tried again a bounded number of times, then the job fails with an event.

`reconcile_jobs` handles every job container and job reservation of a host and hands the
other containers back to the booking side of the tick."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F

from bookings.models import Reservation
from containers import events, services
from containers.commands import command_arguments
from containers.failures import may_pass, stopped_by
from containers.pool import in_parallel
from containers.runtime import ContainerRuntime, EngineUnavailable, ImageMissing, RuntimeProblem
from containers.specs import LABEL_JOB, ContainerState, job_container_name, job_container_spec
from containers.volumes import FolderProblem, prepare_job_mounts
from jobs import logs
from jobs.models import Job
from jobs.services import job_finish, job_gpus_release, job_mark_running

Status = Reservation.Status
JobStatus = Job.Status

logger = logging.getLogger(__name__)
# A disk that refuses the log refuses it every tick: one line per hour in the monitor log.
LOG_ERROR_QUIET = timedelta(hours=1)


def _job_of(state: ContainerState) -> int | None:
    value = state.labels.get(LABEL_JOB, "")
    return int(value) if value.isdigit() else None


def reconcile_jobs(
    *,
    host,
    runtime: ContainerRuntime,
    observed: list[ContainerState],
    now: datetime,
    report,
    contained: Callable[..., AbstractContextManager],
) -> list[ContainerState]:
    """Brings the host's job containers in line with its jobs; returns the containers that
    are not jobs'. Each job's step runs inside `contained` (the tick's guard), so one job
    that goes wrong never stops the others."""
    job_states = [state for state in observed if _job_of(state) is not None]
    active = {
        job.pk: job
        for job in Job.objects.active()
        .filter(reservation__host=host)
        .select_related("user", "image", "reservation__host", "reservation__user")
    }
    current: dict[int, ContainerState] = {}
    for state in job_states:
        job = active.get(_job_of(state))
        if job is not None and state.name == job_container_name(job.user.username, job.pk):
            current[job.pk] = state
        else:
            with contained(None, host=host, now=now, report=report):
                _remove_finished(state, runtime=runtime, now=now, report=report)

    def converge(job: Job) -> None:
        # Not the reservation's guard: a booking's failed step fails its reservation, which
        # would free a job's GPUs while its container runs on. A job's launch contains its
        # own failures (_launch_job); anything else is logged and tried again next tick.
        with contained(None, host=host, now=now, report=report):
            _converge_job(job, container=current.get(job.pk), runtime=runtime, now=now, report=report)

    _release_gpus_of_cancelled_jobs(host=host, with_container={_job_of(state) for state in job_states})
    # Side by side: jobs started in one pass reach their time limit together, and each stop
    # may wait JOB_STOP_GRACE_S for its process; the host's bookings wait for this part.
    in_parallel(converge, list(active.values()))
    return [state for state in observed if _job_of(state) is None]


def _release_gpus_of_cancelled_jobs(*, host, with_container: set[int | None]) -> None:
    """A cancelled job keeps its GPUs until its container is gone (jobs.services.job_cancel;
    `_remove_finished` gives them back once it removed it): those that have no container
    on the engine (never launched, or removed by an earlier tick) give them back now."""
    held = (
        Job.objects.filter(status=JobStatus.CANCELLED, reservation__host=host)
        .filter(
            reservation__allocations__active=True, reservation__allocations__end__gt=F("reservation__end")
        )
        .exclude(pk__in=[job_id for job_id in with_container if job_id is not None])
        .select_related("reservation")
        .distinct()
    )
    for job in held:
        job_gpus_release(reservation=job.reservation)


def _store_log(job: Job, *, container_id: str, runtime: ContainerRuntime, now: datetime) -> None:
    """Saves the container's output; a disk that refuses it costs the log, never the job's
    end (which would otherwise wait for the disk, holding the job's capacity)."""
    try:
        logs.log_store(job=job, chunks=runtime.logs(container_id))
    except OSError as error:
        event = events.job_log_unsaved(username=job.user.username, job_id=job.pk, error=error)
        services.event_record(
            event=event,
            host=job.reservation.host,
            reservation=job.reservation,
            now=now,
            quiet_for=LOG_ERROR_QUIET,
        )


def _remove_finished(state: ContainerState, *, runtime: ContainerRuntime, now: datetime, report) -> None:
    """A container whose job is over (cancelled, or ended by a tick that died half way):
    its output is kept, then it goes. A cancelled job's end is logged here, once its
    container is gone, like every other job's end."""
    job = Job.objects.filter(pk=_job_of(state)).select_related("user", "reservation").first()
    if job is not None:
        runtime.stop(state.id, grace_s=settings.JOB_STOP_GRACE_S)
        _store_log(job, container_id=state.id, runtime=runtime, now=now)
    runtime.remove(state.id)
    report.removed.append(state.name)
    if job is not None and job.status == JobStatus.CANCELLED:
        job_gpus_release(reservation=job.reservation)
        event = events.job_finished(
            username=job.user.username,
            job_id=job.pk,
            status=job.status,
            exit_code=None,
            detail="stopped at its owner's or a maintainer's request",
        )
        services.event_record(event=event, reservation=job.reservation, now=now)


def _finish(job: Job, *, status: str, exit_code: int | None, now: datetime, report, detail: str = "") -> None:
    if job_finish(job=job, status=status, exit_code=exit_code, now=now, message=detail):
        report.ended.append(job.reservation_id)
        event = events.job_finished(
            username=job.user.username, job_id=job.pk, status=status, exit_code=exit_code, detail=detail
        )
        services.event_record(event=event, reservation=job.reservation, now=now)


def _converge_job(
    job: Job, *, container: ContainerState | None, runtime: ContainerRuntime, now: datetime, report
) -> None:
    reservation = job.reservation
    if reservation.end <= now:
        _time_limit_reached(job, container=container, runtime=runtime, now=now, report=report)
        return
    if container is None:
        if reservation.status == Status.RUNNING:
            detail = "its container disappeared from the engine"
            _finish(job, status=JobStatus.FAILED, exit_code=None, now=now, report=report, detail=detail)
            return
        _launch_job(job, runtime=runtime, now=now, report=report)
        return
    if container.is_running:
        if reservation.status != Status.RUNNING or reservation.container_id != container.id:
            services.reservation_mark_running(reservation=reservation, container_id=container.id, now=now)
            job_mark_running(job=job, now=now)
        _store_log(job, container_id=container.id, runtime=runtime, now=now)  # the live tail
        return
    exit_code = runtime.exit_code(container.id)
    _store_log(job, container_id=container.id, runtime=runtime, now=now)
    runtime.remove(container.id)
    report.removed.append(container.name)
    status = JobStatus.SUCCEEDED if exit_code == 0 else JobStatus.FAILED
    _finish(job, status=status, exit_code=exit_code, now=now, report=report)


def _time_limit_reached(
    job: Job, *, container: ContainerState | None, runtime: ContainerRuntime, now: datetime, report
) -> None:
    reservation = job.reservation
    # Released before the limit: a maintainer's stop, a drain.
    released_early = reservation.released_at is not None and (
        reservation.booked_end is None or reservation.released_at < reservation.booked_end
    )
    stopped = f"stopped before its time limit ({reservation.status_message or 'its capacity was released'})"
    if container is None:
        if released_early:
            _finish(job, status=JobStatus.CANCELLED, exit_code=None, now=now, report=report, detail=stopped)
            return
        # Never launched within its window (engine down all along): it did not run.
        detail = reservation.status_message or "its container never started"
        _finish(job, status=JobStatus.FAILED, exit_code=None, now=now, report=report, detail=detail)
        return
    was_running = container.is_running
    if was_running:
        runtime.stop(container.id, grace_s=settings.JOB_STOP_GRACE_S)
    exit_code = runtime.exit_code(container.id)
    _store_log(job, container_id=container.id, runtime=runtime, now=now)
    runtime.remove(container.id)
    report.removed.append(container.name)
    if was_running and released_early:
        _finish(job, status=JobStatus.CANCELLED, exit_code=exit_code, now=now, report=report, detail=stopped)
    elif was_running:
        detail = f"stopped at its time limit of {job.time_limit_minutes} minutes"
        _finish(job, status=JobStatus.TIMED_OUT, exit_code=exit_code, now=now, report=report, detail=detail)
    else:
        status = JobStatus.SUCCEEDED if exit_code == 0 else JobStatus.FAILED
        _finish(job, status=status, exit_code=exit_code, now=now, report=report)


def _launch_job(job: Job, *, runtime: ContainerRuntime, now: datetime, report) -> None:
    reservation = job.reservation
    if not services.reservation_mark_starting(reservation=reservation):
        return  # ended meanwhile (a cancel)
    try:
        spec = job_container_spec(
            reservation=reservation,
            job_id=job.pk,
            # Empty (a DoPQ upload without a command): the built image's own CMD.
            command=command_arguments(job.command) or None,
            image=job.image.reference,
            mounts=prepare_job_mounts(reservation, job_id=job.pk),
            lab_modes=job.image.lab_modes,
        )
        state = runtime.run(spec)
    except EngineUnavailable:
        raise  # the whole host waits for the next tick; the job stays starting
    except (ImageMissing, FolderProblem) as error:
        detail = f"its container could not start ({error})"
        _finish(job, status=JobStatus.FAILED, exit_code=None, now=now, report=report, detail=detail)
        return
    except RuntimeProblem as error:
        _retry_job_launch(job, error=error, now=now, report=report)
        return
    except Exception as error:
        logger.exception("Launching job #%s: unexpected error", job.pk)
        if may_pass(error):
            _retry_job_launch(job, error=error, now=now, report=report)
        else:
            _finish(
                job, status=JobStatus.FAILED, exit_code=None, now=now, report=report, detail=stopped_by(error)
            )
        return
    services.reservation_mark_running(reservation=reservation, container_id=state.id, now=now)
    job_mark_running(job=job, now=now)
    report.started.append(reservation.pk)
    event = events.job_started(
        username=job.user.username,
        job_id=job.pk,
        container_name=spec.name,
        gpus=",".join(spec.gpu_ids) or "none",
    )
    services.event_record(event=event, reservation=reservation, now=now)


def _retry_job_launch(job: Job, *, error: Exception, now: datetime, report) -> None:
    """The engine refused for a reason that may pass: the next tick tries again, a bounded
    number of times; then the job fails, with the engine's answer in the event."""
    reservation = job.reservation
    limit = settings.CONTAINER_MAX_RESTARTS
    report.errors.append(str(error))
    if reservation.restart_count >= limit:
        detail = f"the engine refused its container {limit + 1} times ({error})"
        _finish(job, status=JobStatus.FAILED, exit_code=None, now=now, report=report, detail=detail)
        return
    count = services.reservation_count_restart(reservation=reservation)
    event = events.launch_retrying(
        kind=events.LAUNCH_ERROR, username=job.user.username, cause=str(error), count=count, limit=limit
    )
    services.event_record(event=event, reservation=reservation, now=now)
