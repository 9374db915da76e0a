"""The container lifecycle: reconcile the engines with the reservations, and wake up at the
exact start and end instants.

`reconcile` compares what should run (live reservations whose window contains now) with
what runs (containers carrying the portal's labels) and closes the gap. It keeps no state
of its own, so a tick that crashed half way is finished by the next one, and a per-host
lock makes two ticks at once take turns. The scheduler's entry points are in tasks.py."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from accounts.selectors import capability_for
from aivc_portal.scheduler import queue_task
from aivc_portal.task_names import WAKER_TASK
from bookings.models import GpuAllocation, Reservation
from containers import events, image_services, job_lifecycle, selectors, services
from containers.failures import may_pass, stopped_by
from containers.locks import exclusive
from containers.models import Host, SpaceAudit
from containers.pool import in_parallel
from containers.runtime import ContainerRuntime, EngineUnavailable, ImageMissing, RuntimeProblem, get_runtime
from containers.specs import ContainerSpec, ContainerState, container_name, container_spec, lab_container_spec
from containers.volumes import FolderProblem, prepare_lab_token, prepare_mounts

logger = logging.getLogger(__name__)
Status = Reservation.Status

HOST_LOCK_WAIT_S = 120
ENGINE_DOWN_QUIET = timedelta(minutes=10)
# A waker runs while a start or end is this close, so the gap between two minute ticks
# (up to ~90 s with django-q's 30 s scheduler loop) never hides one.
WAKE_HORIZON = timedelta(seconds=150)
WAKER_LIFETIME = timedelta(minutes=5)
WAKER_POLL_S = 0.5
# Folders and SSH host keys of a reservation starting this soon are made by the tick before
# its start, so the launch itself only creates the container.
PREPARE_AHEAD = timedelta(minutes=10)
PREPARE_MARGIN = timedelta(seconds=15)


@dataclass
class TickReport:
    started: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    blocked: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return ", ".join(f"{name} {len(value)}" for name, value in vars(self).items())


# Reconcile ---------------------------------------------------------------------------


def reconcile(*, host_id: int | None = None, wake: bool = True) -> TickReport:
    """One tick over every host (or one). With `wake`, it also makes sure a waker runs
    when a start or end is near."""
    report = TickReport()
    for host in selectors.hosts_to_reconcile(host_id=host_id):
        with exclusive(f"reconcile:{host.pk}", wait_s=HOST_LOCK_WAIT_S) as acquired:
            if not acquired:
                report.errors.append(f"{host.name}: another tick held the lock")
                continue
            try:
                reconcile_host(host=host, runtime=get_runtime(host), report=report)
            except Exception as error:
                # One host's crash never keeps the hosts after it from being reconciled.
                logger.exception("Reconciling %s failed", host.name)
                report.errors.append(f"{host.name}: {type(error).__name__}: {error}")
                event = events.host_tick_crashed(host_name=host.name, error=error)
                services.event_record(event=event, host=host, now=timezone.now(), quiet_for=ENGINE_DOWN_QUIET)
    if wake:
        ensure_waker(now=timezone.now())
    return report


def reconcile_host(*, host: Host, runtime: ContainerRuntime, report: TickReport) -> None:
    now = timezone.now()
    try:
        _reconcile_host(host=host, runtime=runtime, now=now, report=report)
    except RuntimeProblem as error:
        # Nothing is marked: due reservations stay due and the next tick tries again. An
        # engine that stays down, or a container it refuses to remove, is one line a period.
        report.errors.append(str(error))
        if isinstance(error, EngineUnavailable):
            event = events.engine_unavailable(host_name=host.name, error=error)
        else:
            event = events.reconcile_error(host_name=host.name, error=error)
        services.event_record(event=event, host=host, now=now, quiet_for=ENGINE_DOWN_QUIET)


def _reconcile_host(*, host: Host, runtime: ContainerRuntime, now: datetime, report: TickReport) -> None:
    # Batch jobs first, in their own module: their containers run once and are not restarted.
    observed = job_lifecycle.reconcile_jobs(
        host=host,
        runtime=runtime,
        observed=runtime.list_managed(),
        now=now,
        report=report,
        contained=_contained,
    )
    wanted = {
        reservation.pk: reservation
        for reservation in selectors.reservations_in_window(host=host, now=now).bookings()
    }

    for reservation in selectors.reservations_past_window(host=host, now=now):
        with _contained(reservation, host=host, now=now, report=report):
            _close_window(reservation, now=now, report=report)

    current: dict[int, ContainerState] = {}
    unwanted = []
    for state in observed:
        reservation = wanted.get(state.reservation_id)
        if reservation is not None and state.name == container_name(reservation.user.username):
            current[reservation.pk] = state
        else:
            unwanted.append(state)
    # A container that runs as booked needs nothing; the others are settled (a dead one
    # removed, a restart counted) side by side, then launched together.
    pending = [r for r in wanted.values() if not _runs_as_booked(r, current.get(r.pk))]
    # At a hand-over only the ended containers in the way of a launch (holding its GPUs or
    # its name) go first: the engine must have released those GPUs before the next
    # container starts on them. The rest are removed after the launches.
    in_the_way, out_of_the_way = _split_by_hand_over(unwanted, pending=pending)
    _remove_unwanted(host=host, runtime=runtime, containers=in_the_way, now=now, report=report)
    to_launch: list[Reservation] = []

    def converge(reservation: Reservation) -> None:
        with _contained(reservation, host=host, now=now, report=report):
            container = current.get(reservation.pk)
            if _converge(reservation, container=container, runtime=runtime, now=now, report=report):
                to_launch.append(reservation)

    in_parallel(converge, pending)
    _launch_all(
        sorted(to_launch, key=lambda r: (r.start, r.pk)), host=host, runtime=runtime, now=now, report=report
    )
    _remove_unwanted(host=host, runtime=runtime, containers=out_of_the_way, now=now, report=report)
    in_parallel(
        _prepare_ahead, selectors.reservations_starting(host=host, after=now, until=now + PREPARE_AHEAD)
    )


def _runs_as_booked(reservation: Reservation, container: ContainerState | None) -> bool:
    return (
        container is not None
        and container.is_running
        and not reservation.restart_requested
        and reservation.status == Status.RUNNING
        and reservation.container_id == container.id
    )


def _prepare_ahead(reservation: Reservation) -> None:
    """Makes the folders and host keys of a reservation that starts soon. Left to the launch
    when the start is too close: this tick holds the host's lock, which the tick at the
    start needs. A problem here is left for the launch, which reports it."""
    if timezone.now() > reservation.start - PREPARE_MARGIN:
        return
    try:
        prepare_mounts(reservation)
    except (FolderProblem, OSError) as error:
        logger.info("Preparing the folders of reservation #%s ahead failed: %s", reservation.pk, error)


@contextmanager
def _contained(
    reservation: Reservation | None, *, host: Host, now: datetime, report: TickReport
) -> Iterator[None]:
    """Runs one reservation's (or one container's) step so that what goes wrong there stays
    there: the rest of the host's tick goes on. Only an engine that does not answer stops
    the host's tick, since every other step would fail the same way."""
    try:
        yield
    except EngineUnavailable:
        raise
    except RuntimeProblem as error:
        # The engine refused this step (e.g. a removal); the next tick tries again.
        report.errors.append(str(error))
        event = events.reconcile_error(host_name=host.name, error=error)
        services.event_record(event=event, host=host, now=now, quiet_for=ENGINE_DOWN_QUIET)
    except Exception as error:
        logger.exception("Reconciling on %s: unexpected error", host.name)
        if reservation is None:
            report.errors.append(f"{type(error).__name__}: {error}")
            event = events.host_step_crashed(host_name=host.name, error=error)
            services.event_record(event=event, host=host, now=now, quiet_for=ENGINE_DOWN_QUIET)
        else:
            _contain_failure(reservation, error=error, now=now, report=report)


def _contain_failure(
    reservation: Reservation, *, error: Exception, now: datetime, report: TickReport
) -> None:
    """An unexpected error in one reservation's step: retried next tick, a bounded number
    of times, when it may pass; failed now otherwise."""
    if may_pass(error):
        _retry_launch(reservation, now=now, report=report, error=error, kind=events.UNEXPECTED_ERROR)
        return
    _fail_launch(reservation, now=now, report=report, kind=events.UNEXPECTED_ERROR, message=stopped_by(error))


def _close_window(reservation: Reservation, *, now: datetime, report: TickReport) -> None:
    """A window that is over: a running reservation ended; one whose container was never
    confirmed running (still scheduled, blocked or starting) failed. A job's reservation
    whose job has finished only stops holding its capacity: the job told its own end."""
    if reservation.status == Status.RUNNING or reservation.kind == Reservation.Kind.JOB:
        if services.reservation_mark_ended(reservation=reservation, now=now, only_if_over=True):
            report.ended.append(reservation.pk)
        return
    reason = reservation.status_message or "its container never started"
    message = f"The reservation's window passed without a container: {reason}"
    if services.reservation_mark_failed(reservation=reservation, now=now, message=message, only_if_over=True):
        report.failed.append(reservation.pk)
        event = events.never_started(
            username=reservation.user.username, reservation_id=reservation.pk, reason=reason
        )
        services.event_record(event=event, reservation=reservation, now=now)


def _remove_unwanted(
    *,
    host: Host,
    runtime: ContainerRuntime,
    containers: list[ContainerState],
    now: datetime,
    report: TickReport,
) -> None:
    reservations = selectors.reservations_by_ids(
        ids={c.reservation_id for c in containers if c.reservation_id}
    )

    def remove(state: ContainerState) -> None:
        reservation = reservations.get(state.reservation_id)
        if _wanted_after_all(reservation, state=state, now=now):
            return  # extended after this tick read its window: the next tick keeps it
        # A removal that goes wrong is the host's problem, not the reservation's: its
        # window is over either way, and the next tick tries again.
        with _contained(None, host=host, now=now, report=report):
            _remove(state, reservation=reservation, host=host, runtime=runtime, now=now)
            report.removed.append(state.name)

    # On the launch pool: a hundred ends at one instant wait for the engine side by side.
    in_parallel(remove, containers)


def _split_by_hand_over(
    containers: list[ContainerState], *, pending: list[Reservation]
) -> tuple[list[ContainerState], list[ContainerState]]:
    """(the containers a pending launch waits for, the others). A container is in the way
    when its reservation holds a GPU a pending reservation holds, or it has the name the
    launch will take; one whose reservation is unknown (an orphan) is, to be safe, too."""
    if not containers or not pending:
        return [], containers
    needed_gpus = {allocation.gpu_id for r in pending for allocation in r.allocations.all()}
    needed_names = {container_name(r.user.username) for r in pending}
    held: dict[int, set[int]] = {}
    rows = GpuAllocation.objects.filter(reservation_id__in={c.reservation_id for c in containers})
    for reservation_id, gpu_id in rows.values_list("reservation_id", "gpu_id"):
        held.setdefault(reservation_id, set()).add(gpu_id)
    in_the_way, out_of_the_way = [], []
    for state in containers:
        blocks = (
            state.reservation_id is None
            or state.name in needed_names
            or bool(held.get(state.reservation_id, set()) & needed_gpus)
        )
        (in_the_way if blocks else out_of_the_way).append(state)
    return in_the_way, out_of_the_way


def _wanted_after_all(reservation: Reservation | None, *, state: ContainerState, now: datetime) -> bool:
    """The container's reservation, read again just now, still holds the present."""
    return (
        reservation is not None
        and reservation.is_live
        and reservation.start <= now < reservation.end
        and state.name == container_name(reservation.user.username)
    )


def _remove(
    state: ContainerState,
    *,
    reservation: Reservation | None,
    host: Host,
    runtime: ContainerRuntime,
    now: datetime,
) -> None:
    runtime.remove(state.id)
    if reservation is None:
        services.event_record(event=events.orphan_removed(container_name=state.name), host=host, now=now)
        return
    if reservation.status in selectors.LAUNCHED:
        # Its window is over (released early, or ended while the engine was down).
        services.reservation_mark_ended(reservation=reservation, now=now)
    event = events.container_removed(
        username=reservation.user.username,
        container_name=state.name,
        reservation_id=reservation.pk,
        status=reservation.get_status_display().lower(),
    )
    services.event_record(event=event, reservation=reservation, now=now)


def _converge(
    reservation: Reservation,
    *,
    container: ContainerState | None,
    runtime: ContainerRuntime,
    now: datetime,
    report: TickReport,
) -> bool:
    """Settles what is there for a reservation that does not run as booked; returns
    whether its container must be launched."""
    if reservation.restart_requested:
        if container is not None:
            runtime.remove(container.id)
        services.reservation_clear_restart_request(reservation=reservation)
        event = events.recreated_on_request(username=reservation.user.username)
        services.event_record(event=event, reservation=reservation, now=now)
        return True
    if container is not None and container.is_running:
        if reservation.status != Status.RUNNING or reservation.container_id != container.id:
            # A tick that died after starting the container: adopt what runs.
            services.reservation_mark_running(
                reservation=reservation, container_id=container.id, now=now, address=container.address
            )
        return False
    if container is not None:
        runtime.remove(container.id)
    died = reservation.status == Status.RUNNING
    return not died or _count_restart(reservation, container=container, now=now, report=report)


def _count_restart(
    reservation: Reservation, *, container: ContainerState | None, now: datetime, report: TickReport
) -> bool:
    """A container that died while its reservation is live comes back, a few times."""
    username = reservation.user.username
    what = f"exited ({container.status})" if container else "disappeared"
    limit = settings.CONTAINER_MAX_RESTARTS
    if reservation.restart_count >= limit:
        message = f"The container {what} again after {limit} restarts; a maintainer must look at it"
        services.reservation_mark_failed(reservation=reservation, now=now, message=message)
        report.failed.append(reservation.pk)
        event = events.died_for_good(username=username, what=what, limit=limit)
        services.event_record(event=event, reservation=reservation, now=now)
        return False
    count = services.reservation_count_restart(reservation=reservation)
    event = events.died_restarting(username=username, what=what, count=count, limit=limit)
    services.event_record(event=event, reservation=reservation, now=now)
    return True


def _over_quota(reservations: list[Reservation], *, host: Host) -> dict[int, SpaceAudit]:
    """The verdicts that keep containers from launching, by reservation id; one read for the
    host. Only a first launch waits for space: a container that died mid-window comes back."""
    first = [r for r in reservations if r.status in selectors.STARTS_PENDING]
    verdicts = selectors.space_verdicts(user_ids={r.user_id for r in first}, host=host)
    return {
        r.pk: verdicts[r.user_id] for r in first if r.user_id in verdicts and verdicts[r.user_id].over_quota
    }


def _space_block_message(reservation: Reservation, *, audit: SpaceAudit) -> str:
    """What the user is told about the verdict that keeps their container from launching."""
    if audit.unreadable:
        return (
            f"The space check cannot read {audit.unreadable}, so your folders count as over quota. "
            "Restore its permissions or remove it; the container starts once a "
            "check can measure your folders and finds you under quota."
        )
    capability = capability_for(user=reservation.user, host=reservation.host)
    return (
        f"Over the space quota: work folder {audit.work_gb:g} GB of {capability.work_space_gb} GB, "
        f"backup folder {audit.backup_gb:g} GB of {capability.backup_space_gb} GB, "
        f"home {audit.home_gb or 0:g} GB of {capability.home_space_gb} GB. "
        "Free some space; the container starts once a check finds you under quota."
    )


def _block(reservation: Reservation, *, audit: SpaceAudit, now: datetime, report: TickReport) -> None:
    message = _space_block_message(reservation, audit=audit)
    if reservation.status != Status.BLOCKED and services.reservation_mark_blocked(
        reservation=reservation, message=message
    ):
        report.blocked.append(reservation.pk)
        event = events.launch_blocked_by_space(username=reservation.user.username, blocked=message)
        services.event_record(event=event, reservation=reservation, now=now)


@dataclass(frozen=True)
class _Launched:
    reservation: Reservation
    spec: ContainerSpec
    state: ContainerState


def _launch_all(
    reservations: list[Reservation],
    *,
    host: Host,
    runtime: ContainerRuntime,
    now: datetime,
    report: TickReport,
) -> None:
    """Launches the host's due containers: what the database must hear is said for all of
    them at once (the space verdicts read, the moves to starting and running, the
    events), the engine's work is done side by side, one reservation's failure stays its
    own."""
    if not reservations:
        return
    blocked = _over_quota(reservations, host=host)
    for reservation in reservations:
        if reservation.pk in blocked:
            with _contained(reservation, host=host, now=now, report=report):
                _block(reservation, audit=blocked[reservation.pk], now=now, report=report)
    # Cancelled or ended meanwhile: not launched.
    starting = services.reservations_mark_starting(
        reservations=[r for r in reservations if r.pk not in blocked]
    )
    launched: queue.SimpleQueue[_Launched] = queue.SimpleQueue()

    def launch(reservation: Reservation) -> None:
        with _contained(reservation, host=host, now=now, report=report):
            result = _launch(reservation, runtime=runtime, now=now, report=report)
            if result is not None:
                launched.put(result)

    def flush() -> None:
        batch = []
        while not launched.empty():
            batch.append(launched.get())
        with _contained(None, host=host, now=now, report=report):
            _record_started(batch, host=host, now=now, report=report)

    try:
        in_parallel(launch, starting, flush=flush)
    finally:
        # Even when the engine stopped answering part way: what started is recorded.
        flush()


def _record_started(launched: list[_Launched], *, host: Host, now: datetime, report: TickReport) -> None:
    """Marks running, in one UPDATE, the reservations whose containers started (not one
    cancelled meanwhile: the next tick removes its container) and logs them in one INSERT."""
    if not launched:
        return
    moved = services.reservations_mark_running(
        containers=[(item.reservation, item.state.id) for item in launched],
        now=now,
        addresses={item.reservation.pk: item.state.address for item in launched},
    )
    specs = {item.reservation.pk: item.spec for item in launched}
    records = []
    for reservation in moved:
        with _contained(reservation, host=host, now=now, report=report):
            spec = specs[reservation.pk]
            event = events.started(
                username=reservation.user.username,
                container_name=spec.name,
                cpus=f"{reservation.cpus.normalize():f}",
                memory_gb=reservation.memory_gb,
                gpus=",".join(map(str, reservation.gpu_indices())) or "none",
                ssh_port=spec.ssh_port,
            )
            records.append((event, reservation))
            report.started.append(reservation.pk)
    services.events_record_for(records=records, now=now)


def _launch(
    reservation: Reservation, *, runtime: ContainerRuntime, now: datetime, report: TickReport
) -> _Launched | None:
    """One container of a reservation already marked starting; what stops it is recorded
    here, what started is recorded with the others by `_record_started`."""
    image = reservation.image.reference if reservation.image else ""
    if reservation.image and not reservation.image.takes_portal_keys:
        # Booked before a maintainer marked the image legacy: nobody could log in to it.
        message = (
            f"The image {image} expects a password login, which the portal does not pass; "
            "book an image that takes SSH keys"
        )
        _fail_launch(reservation, now=now, report=report, kind=events.IMAGE_NEEDS_PASSWORD, message=message)
        return None
    if reservation.image is not None and not reservation.image.is_active:
        # Withdrawn by the maintainers after the booking: no container runs it again.
        message = (
            f"The image {image} has been withdrawn by the maintainers, so the container "
            "cannot start; book again with another image"
        )
        _fail_launch(reservation, now=now, report=report, kind=events.IMAGE_INACTIVE, message=message)
        return None
    try:
        if not image:
            raise ImageMissing("the reservation names no image")
        spec = container_spec(reservation=reservation, image=image, mounts=prepare_mounts(reservation))
        if reservation.image.lab_modes:
            spec = lab_container_spec(
                spec, reservation=reservation, token_folder=str(prepare_lab_token(reservation))
            )
        state = runtime.run(spec)
    except EngineUnavailable:
        raise
    except ImageMissing as error:
        if image and image_services.image_launch_waits(reservation=reservation, now=now):
            return None  # the host's agent is pulling it; a later tick launches
        message = (
            f"The image {image or '(none)'} is not on {reservation.host.name}; "
            f"ask a maintainer to pull it or book another image ({error})"
        )
        _fail_launch(reservation, now=now, report=report, kind=events.IMAGE_MISSING, message=message)
        return None
    except FolderProblem as error:
        _fail_launch(reservation, now=now, report=report, kind=events.FOLDER_PROBLEM, message=str(error))
        return None
    except RuntimeProblem as error:
        _retry_launch(reservation, now=now, report=report, error=error)
        return None
    return _Launched(reservation=reservation, spec=spec, state=state)


def _fail_launch(
    reservation: Reservation, *, now: datetime, report: TickReport, kind: events.Kind, message: str
) -> None:
    services.reservation_mark_failed(reservation=reservation, now=now, message=message)
    report.failed.append(reservation.pk)
    event = events.launch_failed(kind=kind, username=reservation.user.username, message=message)
    services.event_record(event=event, reservation=reservation, now=now)


def _retry_launch(
    reservation: Reservation,
    *,
    now: datetime,
    report: TickReport,
    error: Exception,
    kind: events.Kind = events.LAUNCH_ERROR,
) -> None:
    """A refusal that may pass (a port in use, a name taken, a full disk): the next tick
    tries again, a bounded number of times."""
    limit = settings.CONTAINER_MAX_RESTARTS
    cause = str(error) if isinstance(error, RuntimeProblem) else f"{type(error).__name__}: {error}"
    if reservation.restart_count >= limit:
        message = f"{cause} (tried {limit + 1} times)"
        _fail_launch(reservation, now=now, report=report, kind=kind, message=message)
        return
    count = services.reservation_count_restart(reservation=reservation)
    report.errors.append(cause)
    event = events.launch_retrying(
        kind=kind, username=reservation.user.username, cause=cause, count=count, limit=limit
    )
    services.event_record(event=event, reservation=reservation, now=now)


# Exact-time wake-ups -----------------------------------------------------------------


def _waker_lock() -> str:
    """One waker per agent (each watches its own host), one for the central scheduler."""
    return f"waker:{settings.AIVC_HOST}" if settings.AIVC_HOST else "waker"


def ensure_waker(*, now: datetime) -> None:
    """Queues a waker when a start or end is near and none runs; called by every tick."""
    if selectors.next_boundary(after=now, until=now + WAKE_HORIZON) is None:
        return
    with exclusive(_waker_lock()) as free:
        pass
    if free:
        queue_task(WAKER_TASK)


def wake_at_boundaries() -> str:
    """Sleeps until each start or end instant that is near and reconciles right then, so
    a container runs within seconds of its start and is gone within seconds of its end.
    One waker at a time; it exits when nothing is near and hands over after a while, so
    it never outlives django-q's task timeout."""
    fired = 0
    with exclusive(_waker_lock()) as acquired:
        if not acquired:
            return "another waker runs"
        started = handled_until = timezone.now()
        while True:
            now = timezone.now()
            boundary = selectors.next_boundary(after=handled_until, until=now + WAKE_HORIZON)
            if boundary is None:
                return f"woke {fired} times, nothing near"
            if boundary <= now:
                handled_until = now
                try:
                    reconcile(wake=False)
                except Exception:
                    logger.exception("Reconcile from the waker failed; the minute tick retries.")
                fired += 1
                continue
            if now - started > WAKER_LIFETIME:
                break
            time.sleep(min((boundary - now).total_seconds(), WAKER_POLL_S))
    queue_task(WAKER_TASK)
    return f"woke {fired} times, handed over"
