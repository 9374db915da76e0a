"""Batch-job rules: submit, cancel, the maintainers' queue controls, and the writes the
scheduler and the container lifecycle make. Each rule lives in one function; the booking
rules it shares (resources, quota, image, maintenance lock) come from bookings.services."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.selectors import Capability, capability_for
from aivc_portal.scheduler import queue_host_task, queue_task
from aivc_portal.task_names import RECONCILE_TASK, SCHEDULE_JOBS_TASK
from bookings.capacity import HostLoad
from bookings.limits import check_job_request
from bookings.models import GpuAllocation, Reservation
from bookings.selectors import hosts_open_to
from bookings.services import (
    NOT_ENOUGH_CAPACITY,
    check_host_accepts,
    check_host_open_to,
    check_within_capability,
    host_id_for,
    request_resources,
    resolve_image,
    whole_number,
)
from bookings.timeslots import MAX_LENGTH, wrong_input
from containers.commands import command_arguments
from containers.models import Host, Image
from jobs import selectors
from jobs.models import HostDrain, Job, JobDependency, QueueState, WaitReason

MAX_COMMAND = 4000
MAX_TIME_LIMIT_MINUTES = int(MAX_LENGTH.total_seconds() // 60)


# Input shape -----------------------------------------------------------------------------


def clean_command(value: object) -> str:
    command = str(value if value is not None else "").strip()
    if len(command) > MAX_COMMAND:
        raise wrong_input(f"The command is longer than {MAX_COMMAND} characters.", "command")
    try:
        arguments = command_arguments(command)
    except ValueError as error:
        raise wrong_input(f"The command cannot be read as arguments ({error}).", "command") from None
    if not arguments:
        raise wrong_input("Give the command the job runs.", "command")
    return command


def clean_time_limit(value: object) -> int:
    minutes = whole_number(value, field="time_limit_minutes")
    if minutes < 1:
        raise wrong_input("The time limit is at least 1 minute.", "time_limit_minutes")
    if minutes > MAX_TIME_LIMIT_MINUTES:
        raise wrong_input("The time limit is at most 2 weeks.", "time_limit_minutes")
    return minutes


# Rules -----------------------------------------------------------------------------------


def _check_time_limit_allowed(*, minutes: int, capability: Capability) -> None:
    """A job runs at most its profile's longest time limit."""
    if minutes > capability.job_time_limit_minutes:
        raise ValidationError(
            {
                "time_limit_minutes": _(
                    "Over the maximum required. Your profile allows jobs of at most %(most)s minutes."
                )
                % {"most": capability.job_time_limit_minutes}
            },
            code="over_maximum",
        )


def _check_fits_host_totals(*, host: Host, cpus, memory_gb: int, gpu_count: int) -> None:
    """A job bigger than the whole host would wait forever: refused at once."""
    if cpus > host.cpus or memory_gb > host.memory_gb or gpu_count > len(host.active_gpus):
        raise ValidationError(NOT_ENOUGH_CAPACITY, code="no_capacity")


def _check_queue_room(*, user: User, capability: Capability) -> None:
    """A user keeps at most their profile's number of jobs waiting at once."""
    if selectors.queued_count(user_id=user.pk) >= capability.queued_jobs:
        raise ValidationError(
            _("You have %(count)s jobs waiting, the most your profile allows; wait or cancel one.")
            % {"count": capability.queued_jobs},
            code="queue_full",
        )


def _check_host_takes_jobs(*, host: Host) -> None:
    check_host_accepts(host=host)
    if HostDrain.objects.filter(host=host).exists():
        raise ValidationError(
            {"host": _("%(host)s is drained: it starts no new jobs.") % {"host": host.name}},
            code="host_drained",
        )


def job_allowed_on(
    *, user: User, host: Host, cpus, memory_gb: int, gpu_count: int, minutes: int
) -> Capability:
    """Every rule a job must pass on one host; returns the user's capability there."""
    _check_host_takes_jobs(host=host)
    check_host_open_to(user=user, host=host)
    check_within_capability(user=user, host=host, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count)
    capability = capability_for(user=user, host=host)
    _check_time_limit_allowed(minutes=minutes, capability=capability)
    _check_fits_host_totals(host=host, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count)
    return capability


def job_within_limits(
    *, capability: Capability, host: Host, cpus, memory_gb: int, gpu_count: int, minutes: int
) -> bool:
    """The quota, time-limit and host-size rules of `job_allowed_on` as a yes/no from a
    capability read already: the scheduler asks this for every queued job and host."""
    if cpus > capability.cpus or memory_gb > capability.memory_gb or gpu_count > capability.gpus:
        return False
    try:
        _check_time_limit_allowed(minutes=minutes, capability=capability)
        _check_fits_host_totals(host=host, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count)
    except ValidationError:
        return False
    return True


# Services --------------------------------------------------------------------------------


def job_submit(
    *,
    user: User,
    command: str,
    cpus: object,
    memory_gb: object,
    gpu_count: object = 0,
    time_limit_minutes: object,
    image: Image | int | str | None = None,
    host: Host | int | str | None = None,
    dependency: str = "",
    now: datetime | None = None,
) -> Job:
    """Queues a job. It passes the booking rules for resources, quota and image on its host
    (or, with no host, on at least one host), the profile's time limit and queue size.
    `dependency` in Slurm's words ("afterok:12:13,afterany:14") names the user's own jobs
    it waits for."""
    now = now or timezone.now()
    cpus, memory_gb, gpu_count = request_resources(cpus, memory_gb, gpu_count)
    minutes = clean_time_limit(time_limit_minutes)
    command = clean_command(command)
    wanted = parse_dependency(dependency)
    with transaction.atomic():
        job = queue_job(
            user=user,
            host=host,
            image=lambda: resolve_image(image, user=user),
            command=command,
            cpus=cpus,
            memory_gb=memory_gb,
            gpu_count=gpu_count,
            minutes=minutes,
            now=now,
        )
        _add_dependencies(job, wanted)
    queue_task(SCHEDULE_JOBS_TASK)
    return job


MAX_DEPENDENCIES = 50


def parse_dependency(text: object) -> list[tuple[str, int]]:
    """Slurm's dependency words, "afterok:12:13,afterany:14" (commas or spaces between
    parts), as (condition, job id) pairs; a clear error for anything else."""
    text = str(text or "").strip()
    if not text:
        return []
    conditions = set(JobDependency.Condition.values)
    pairs: list[tuple[str, int]] = []
    for part in re.split(r"[,\s]+", text):
        name, *ids = part.split(":")
        if (
            name not in conditions
            or not ids
            or not all(i.isascii() and i.isdigit() and len(i) <= 18 for i in ids)
        ):
            raise ValidationError(
                {
                    "dependency": _(
                        "Write dependencies as afterok:ID, afterany:ID or afternotok:ID (several "
                        "ids with ':', several parts with ','); not %(part)s."
                    )
                    % {"part": part[:40]}
                },
                code="bad_dependency",
            )
        pairs.extend((name, int(i)) for i in ids)
    if len(pairs) > MAX_DEPENDENCIES:
        raise ValidationError(
            {"dependency": _("At most %(most)s dependencies.") % {"most": MAX_DEPENDENCIES}},
            code="too_many_dependencies",
        )
    return pairs


def _add_dependencies(job: Job, wanted: list[tuple[str, int]]) -> None:
    """The new job's dependencies, each on an existing job of the same user (another
    user's job is refused as if it did not exist). One that can never be met refuses the
    submit: nothing is queued."""
    if not wanted:
        return
    owned = dict(
        Job.objects.filter(user_id=job.user_id, pk__in={pk for _, pk in wanted}).values_list("pk", "status")
    )
    rows = {}
    for condition, pk in wanted:
        if pk not in owned or pk == job.pk:
            raise ValidationError(
                {"dependency": _("You have no job #%(id)s.") % {"id": pk}}, code="unknown_dependency"
            )
        dependency = JobDependency(job=job, on_id=pk, condition=condition)
        if dependency.verdict(owned[pk]) is False:
            raise ValidationError(
                {
                    "dependency": _("Job #%(id)s has finished as %(status)s: %(condition)s can never hold.")
                    % {"id": pk, "status": owned[pk], "condition": condition}
                },
                code="dependency_never",
            )
        rows[pk] = dependency
    JobDependency.objects.bulk_create(rows.values())


def jobs_settle_dependencies(*, now: datetime) -> dict[int, str]:
    """Looks at every queued job with dependencies: one whose dependency can no longer be
    met is cancelled, saying which; returns the others still waiting on one (job id ->
    the jobs it waits for, in words). One query for all."""
    rows = JobDependency.objects.filter(job__status=Job.Status.QUEUED).values_list(
        "job_id", "on_id", "condition", "on__status"
    )
    waiting: dict[int, list[int]] = defaultdict(list)
    broken: dict[int, str] = {}
    for job_id, on_id, condition, on_status in rows:
        verdict = JobDependency(condition=condition).verdict(on_status)
        if verdict is False and job_id not in broken:
            broken[job_id] = _(
                "its dependency %(condition)s:%(id)s can no longer be met (job #%(id)s %(status)s)"
            ) % {
                "condition": condition,
                "id": on_id,
                "status": on_status,
            }
        elif verdict is None:
            waiting[job_id].append(on_id)
    for job_id, reason in broken.items():
        _cancel_queued(job_id=job_id, message=reason, now=now)
    return {
        job_id: _("job %(ids)s") % {"ids": ", ".join(f"#{pk}" for pk in sorted(ids))}
        for job_id, ids in waiting.items()
        if job_id not in broken
    }


@transaction.atomic
def _cancel_queued(*, job_id: int, message: str, now: datetime) -> None:
    job = Job.objects.select_for_update().filter(pk=job_id, status=Job.Status.QUEUED).first()
    if job is None:
        return
    job.status, job.finished_at, job.status_message = Job.Status.CANCELLED, now, message[:500]
    job.planned_start = job.planned_host = None
    job.save(update_fields=["status", "finished_at", "status_message", "planned_start", "planned_host"])


def queue_job(
    *,
    user: User,
    host: Host | int | str | None,
    image: Callable[[], Image],
    command: str,
    cpus,
    memory_gb: int,
    gpu_count: int,
    minutes: int,
    now: datetime,
) -> Job:
    """The job row, once the job's rules pass (inside the caller's transaction); `image`
    is asked for after the rules, so a refused job creates no image record."""
    # Two submits by one user queue here, so the queue size holds.
    user = User.objects.select_for_update().get(pk=user.pk)
    chosen_host = Host.objects.get(pk=host_id_for(host)) if host not in (None, "") else None
    if chosen_host is not None:
        capability = job_allowed_on(
            user=user,
            host=chosen_host,
            cpus=cpus,
            memory_gb=memory_gb,
            gpu_count=gpu_count,
            minutes=minutes,
        )
    else:
        capability = _first_allowing_host(
            user=user, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count, minutes=minutes
        )
    _check_queue_room(user=user, capability=capability)
    check_job_request(
        user=user, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count, minutes=minutes, now=now
    )
    return Job.objects.create(
        user=user,
        host=chosen_host,
        image=image(),
        command=command,
        cpus=cpus,
        memory_gb=memory_gb,
        gpu_count=gpu_count,
        time_limit_minutes=minutes,
        submitted_at=now,
    )


def _first_allowing_host(*, user: User, cpus, memory_gb: int, gpu_count: int, minutes: int) -> Capability:
    """The capability on the first host that takes the job; if none does, the reason the
    first host gave (the same message a booking there would get)."""
    first_error = None
    for host in hosts_open_to(user=user).select_related("access"):
        try:
            return job_allowed_on(
                user=user, host=host, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count, minutes=minutes
            )
        except ValidationError as error:
            first_error = first_error or error
    raise first_error or ValidationError({"host": _("There is no host to run jobs on.")}, code="no_host")


def _locked_job(job: Job) -> Job:
    """The job row, locked; its reservation is read after the lock, by a statement of its
    own. Joined into the locking read, a reservation the scheduler wrote while this waited
    for the lock came back as none (PostgreSQL rechecks the locked row, not the joined
    ones): the cancel then left the new reservation holding capacity."""
    locked = Job.objects.select_for_update(of=("self",)).select_related("user").get(pk=job.pk)
    if locked.reservation_id is not None:
        locked.reservation = Reservation.objects.select_for_update(of=("self",)).get(pk=locked.reservation_id)
    return locked


def _end_reservation(
    reservation: Reservation, *, now: datetime, ended_by: str, keep_gpus: bool = False
) -> None:
    """Frees a job's capacity from `now` on: the reservation ends and its GPU allocations
    stop here, so the scheduler and bookings may use them at once. `ended_by`: the job
    itself (it finished) or whoever cancelled it, for the reports. With `keep_gpus` the GPUs
    stay held until `job_gpus_release` (its container may still be running on them)."""
    if not reservation.is_live:
        return
    end = max(min(reservation.end, now), reservation.start + timedelta(microseconds=1))
    fields = ["end", "ended_at", "status", "ended_by", "updated_at"]
    reservation.ended_by = ended_by
    if end < (reservation.booked_end or reservation.end):
        # Done before its time limit: the rest is given back, as a booking released early
        # gives it back, and the usage report counts only what the job held.
        reservation.released_at = end
        fields.append("released_at")
    reservation.end = end
    reservation.ended_at = now
    reservation.status = Reservation.Status.ENDED
    reservation.save(update_fields=fields)
    if not keep_gpus:
        job_gpus_release(reservation=reservation)


def job_gpus_release(*, reservation: Reservation) -> None:
    """The GPUs of an ended job reservation stop being held past its end. Called when its
    container is gone: a cancelled job's process may run up to JOB_STOP_GRACE_S after the
    cancel, and the next job must not be started on GPUs it still uses."""
    end = reservation.end
    reservation.allocations.filter(start__gte=end).update(active=False)
    reservation.allocations.filter(start__lt=end, end__gt=end).update(end=end)


@transaction.atomic
def job_cancel(*, job: Job, now: datetime | None = None, ended_by: str = Reservation.EndedBy.OWNER) -> Job:
    """A queued job leaves the queue; a starting or running one is stopped (the lifecycle
    removes its container, keeping its log): its CPUs and memory are free at once, its
    GPUs once the container is gone."""
    now = now or timezone.now()
    job = _locked_job(job)
    if not job.can_cancel:
        raise ValidationError(_("This job has finished already."), code="not_cancellable")
    was_running = job.status in Job.ACTIVE_STATUSES
    job.status = Job.Status.CANCELLED
    job.finished_at = now
    job.planned_start = job.planned_host = None
    job.save(update_fields=["status", "finished_at", "planned_start", "planned_host"])
    if job.reservation is not None:
        # Whatever the job's status said, a cancelled job holds nothing from now on but the
        # GPUs its container may still run on: the tick frees those once it is gone.
        _end_reservation(job.reservation, now=now, ended_by=ended_by, keep_gpus=was_running)
        queue_host_task(RECONCILE_TASK, host=job.reservation.host)
    queue_task(SCHEDULE_JOBS_TASK)
    return job


@transaction.atomic
def job_hold(*, job: Job, by: User, now: datetime | None = None) -> Job:
    """The scheduler skips the queued job until it is released ("waiting: held"). Its
    submit time stays, so released it takes back its place in fair-share order."""
    job = _locked_job(job)
    if job.status != Job.Status.QUEUED:
        raise ValidationError(_("Only a queued job can be held."), code="not_queued")
    if job.held_at is None:
        job.held_at, job.held_by = now or timezone.now(), by
        job.wait_reason, job.wait_detail = WaitReason.HELD, ""
        job.planned_start = job.planned_host = None
        job.save(
            update_fields=[
                "held_at",
                "held_by",
                "wait_reason",
                "wait_detail",
                "planned_start",
                "planned_host",
            ]
        )
    return job


@transaction.atomic
def job_release(*, job: Job) -> Job:
    """A held job goes back to the queue, at the place its submit time gives it."""
    job = _locked_job(job)
    if job.status != Job.Status.QUEUED:
        raise ValidationError(_("Only a queued job can be released."), code="not_queued")
    if job.held_at is not None:
        job.held_at, job.held_by = None, None
        job.wait_reason, job.wait_detail = WaitReason.NONE, ""
        job.save(update_fields=["held_at", "held_by", "wait_reason", "wait_detail"])
        queue_task(SCHEDULE_JOBS_TASK)
    return job


@transaction.atomic
def queue_pause(*, by: User, reason: str = "", now: datetime | None = None) -> QueueState:
    """Stops the scheduler from starting jobs; running ones go on. Says who and since when."""
    now = now or timezone.now()
    state = selectors.queue_state()
    state = QueueState.objects.select_for_update().get(pk=state.pk)
    if not state.paused:
        state.paused, state.paused_by, state.paused_since = True, by, now
        state.reason = reason[:200]
        state.save()
    return state


@transaction.atomic
def queue_resume(*, by: User) -> QueueState:
    state = selectors.queue_state()
    state = QueueState.objects.select_for_update().get(pk=state.pk)
    state.paused, state.paused_by, state.paused_since, state.reason = False, None, None, ""
    state.save()
    queue_task(SCHEDULE_JOBS_TASK)
    return state


def host_drain(*, host: Host, by: User, now: datetime | None = None) -> HostDrain:
    """The host starts no new jobs; those running finish."""
    drain, _ = HostDrain.objects.get_or_create(
        host=host, defaults={"drained_by": by, "drained_since": now or timezone.now()}
    )
    return drain


def host_undrain(*, host: Host) -> None:
    HostDrain.objects.filter(host=host).delete()
    queue_task(SCHEDULE_JOBS_TASK)


# The scheduler's writes -----------------------------------------------------------------


def jobs_start(
    *, host: Host, job_ids: list[int], now: datetime, planned_gpus: dict[int, list[int]] | None = None
) -> list[int]:
    """Gives queued jobs, in the order given, their capacity on `host` for [now, now + time
    limit): each a Reservation of kind job with its GPUs. The plan came from a snapshot,
    so under the host lock the host's load is read again from the database and each job is
    checked against it, and against the jobs started before it in this call; a job that no
    longer fits (a booking came in between) or left the queue is skipped. A job takes the
    GPUs the plan gave it (`planned_gpus`, by job id) while they are all still free: the
    plan kept those away from the GPUs it holds for the head of the queue, which the
    database does not know of. Returns the ids of the jobs started."""
    planned_gpus = planned_gpus or {}
    try:
        with transaction.atomic():
            host = Host.objects.select_for_update().get(pk=host.pk)
            locked = Job.objects.select_for_update(of=("self",)).select_related("user", "image")
            # A job held or cancelled since the pass read the queue does not start.
            waiting = locked.filter(pk__in=job_ids, status=Job.Status.QUEUED, held_at__isnull=True)
            by_id = {job.pk: job for job in waiting}
            jobs = [by_id[pk] for pk in job_ids if pk in by_id]
            if not jobs:
                return []
            load = HostLoad.load(host, now, now + max(job.time_limit for job in jobs))
            started = []
            for job in jobs:
                end = now + job.time_limit
                if not load.fits(now, end, cpus=job.cpus, memory_gb=job.memory_gb, gpu_count=job.gpu_count):
                    continue
                free = load.availability(now, end)
                planned = [gpu for gpu in free.free_gpus if gpu.pk in set(planned_gpus.get(job.pk, ()))]
                gpus = planned if len(planned) == job.gpu_count else free.pick_gpus(job.gpu_count)
                load.hold(now, end, job.cpus, job.memory_gb, gpus)
                started.append((job, gpus))
            _write_starts(host=host, started=started, now=now)
    except IntegrityError:
        # The exclusion constraint saw a GPU taken meanwhile: nothing of this call is
        # written, and the next pass plans again.
        return []
    if started:
        queue_host_task(RECONCILE_TASK, host=host)
    return [job.pk for job, _gpus in started]


def _write_starts(*, host: Host, started: list[tuple[Job, list]], now: datetime) -> None:
    reservations = Reservation.objects.bulk_create(
        Reservation(
            kind=Reservation.Kind.JOB,
            user=job.user,
            host=host,
            start=now,
            end=now + job.time_limit,
            booked_end=now + job.time_limit,
            cpus=job.cpus,
            memory_gb=job.memory_gb,
            gpu_count=job.gpu_count,
            image=job.image,
            forward_port=job.user.forward_port or 0,
        )
        for job, _gpus in started
    )
    GpuAllocation.objects.bulk_create(
        GpuAllocation(reservation=reservation, gpu=gpu, start=reservation.start, end=reservation.end)
        for reservation, (_job, gpus) in zip(reservations, started, strict=True)
        for gpu in gpus
    )
    for reservation, (job, _gpus) in zip(reservations, started, strict=True):
        job.reservation = reservation
        job.status = Job.Status.STARTING
        job.started_at = job.planned_start = now
        job.planned_host = host
        job.wait_reason, job.wait_detail = WaitReason.NONE, ""
    fields = [
        "reservation",
        "status",
        "started_at",
        "planned_start",
        "planned_host",
        "wait_reason",
        "wait_detail",
    ]
    Job.objects.bulk_update([job for job, _gpus in started], fields)


def job_mark_running(*, job: Job, now: datetime) -> bool:
    return bool(Job.objects.filter(pk=job.pk, status=Job.Status.STARTING).update(status=Job.Status.RUNNING))


@transaction.atomic
def job_finish(
    *, job: Job, status: str, now: datetime, exit_code: int | None = None, message: str = ""
) -> bool:
    """Ends a started job (its container exited, hit the limit, or could not start) and
    frees its capacity at once. Returns False if it had finished already (a cancel won)."""
    job = _locked_job(job)
    if job.status not in Job.ACTIVE_STATUSES:
        return False
    job.status, job.exit_code, job.finished_at = status, exit_code, now
    job.status_message = message[:500]
    job.save(update_fields=["status", "exit_code", "finished_at", "status_message"])
    if job.reservation is not None:
        _end_reservation(job.reservation, now=now, ended_by=Reservation.EndedBy.JOB)
    queue_task(SCHEDULE_JOBS_TASK)
    return True


def job_record_plan(
    *, plans: dict[int, tuple[datetime, int]], waits: dict[int, tuple[str, str]] | None = None
) -> int:
    """Stores the planned start and host of the jobs the pass estimated and what holds each
    waiting job (`waits`: job id -> (reason, detail)), and clears both on the others still
    queued; writes only what changed. Returns how many rows changed. Most of a long queue
    shares one value (behind the head, no estimate), so the rows are written in one UPDATE
    per distinct value rather than one statement that names every row."""
    waits = waits or {}
    fields = ("pk", "planned_start", "planned_host_id", "wait_reason", "wait_detail")
    changed: dict[tuple, list[int]] = defaultdict(list)
    # Every queued row, read plainly: cheaper than naming a thousand ids in the query. A
    # held job keeps "held" (the pass skipped it).
    for pk, *old in Job.objects.queued().filter(held_at__isnull=True).values_list(*fields):
        start, host_id = plans.get(pk, (None, None))
        reason, detail = waits.get(pk, (WaitReason.NONE, ""))
        new = (start, host_id, reason, detail[:300])
        if tuple(old) != new:
            changed[new].append(pk)
    for (start, host_id, reason, detail), ids in changed.items():
        Job.objects.filter(pk__in=ids, status=Job.Status.QUEUED, held_at__isnull=True).update(
            planned_start=start, planned_host_id=host_id, wait_reason=reason, wait_detail=detail
        )
    return sum(len(ids) for ids in changed.values())
