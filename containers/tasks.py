"""Scheduler tasks (django-q2): reconcile the engines with the reservations, wake up at the
exact start and end instants, and audit the users' folder sizes.

`reconcile` compares what should run (live reservations whose window contains now) with
what runs (containers carrying the portal's labels) and closes the gap. It keeps no state
of its own, so a tick that crashed half way is finished by the next one, and a per-host
lock makes two ticks at once take turns."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from accounts.models import User
from accounts.selectors import capability_for
from aivc_portal.scheduler import queue_task
from bookings.models import Reservation
from containers import gpus, selectors, services
from containers.agent_services import agent_silence_check
from containers.locks import exclusive
from containers.models import ContainerEvent, Host
from containers.runtime import (
    ContainerRuntime,
    ContainerState,
    EngineUnavailable,
    ImageMissing,
    RuntimeProblem,
    container_name,
    container_spec,
    get_runtime,
)
from containers.telemetry_selectors import telemetry_host
from containers.telemetry_services import (
    gpu_duplicate_use_check,
    gpu_inventory_sync,
    gpu_samples_prune,
    gpu_samples_record,
    reservation_idle_update,
)
from containers.volumes import FolderProblem, prepare_mounts

logger = logging.getLogger(__name__)
Level = ContainerEvent.Level
Status = Reservation.Status

RECONCILE_TASK = "containers.tasks.reconcile"
WAKER_TASK = "containers.tasks.wake_at_boundaries"
USER_AUDIT_TASK = "containers.tasks.space_audit_user"
HOST_LOCK_WAIT_S = 120
ENGINE_DOWN_QUIET = timedelta(minutes=10)
# A waker runs while a start or end is this close, so the gap between two minute ticks
# (up to ~90 s with django-q's 30 s scheduler loop) never hides one.
WAKE_HORIZON = timedelta(seconds=150)
WAKER_LIFETIME = timedelta(minutes=5)
WAKER_POLL_S = 0.5
SPACE_AUDIT_AHEAD = timedelta(hours=1)
GIB = 1024**3


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


def reconcile(host_id: int | None = None, *, wake: bool = True) -> str:
    """One tick over every host (or one). Returns a one-line summary for django-q. With
    `wake`, it also makes sure a waker runs when a start or end is near."""
    report = TickReport()
    for host in selectors.hosts_to_reconcile(host_id=host_id):
        with exclusive(f"reconcile:{host.pk}", wait_s=HOST_LOCK_WAIT_S) as acquired:
            if not acquired:
                report.errors.append(f"{host.name}: another tick held the lock")
                continue
            reconcile_host(host=host, runtime=get_runtime(host), report=report)
    if wake:
        _ensure_waker(now=timezone.now())
    return str(report)


def reconcile_host(*, host: Host, runtime: ContainerRuntime, report: TickReport) -> None:
    now = timezone.now()
    try:
        _reconcile_host(host=host, runtime=runtime, now=now, report=report)
    except RuntimeProblem as error:
        # Nothing is marked: due reservations stay due and the next tick tries again. An
        # engine that stays down, or a container it refuses to remove, is one line a period.
        report.errors.append(str(error))
        if isinstance(error, EngineUnavailable):
            sign, what = "EngineUnavailable", f"The container engine of {host.name} does not answer"
        else:
            sign, what = "ReconcileError", f"Reconciling {host.name} stopped half way"
        services.event_log(
            level=Level.ERROR,
            sign=sign,
            message=f"{what} ({error}); the next tick tries again",
            host=host,
            now=now,
            quiet_for=ENGINE_DOWN_QUIET,
        )


def _reconcile_host(*, host: Host, runtime: ContainerRuntime, now: datetime, report: TickReport) -> None:
    observed = runtime.list_managed()
    wanted = {
        reservation.pk: reservation for reservation in selectors.reservations_in_window(host=host, now=now)
    }

    for reservation in selectors.reservations_past_window(host=host, now=now):
        _close_window(reservation, now=now, report=report)

    current: dict[int, ContainerState] = {}
    unwanted = []
    for state in observed:
        reservation = wanted.get(state.reservation_id)
        if reservation is not None and state.name == container_name(reservation.user.username):
            current[reservation.pk] = state
        else:
            unwanted.append(state)
    _remove_unwanted(host=host, runtime=runtime, containers=unwanted, now=now, report=report)

    for reservation in wanted.values():
        _converge(reservation, container=current.get(reservation.pk), runtime=runtime, now=now, report=report)


def _close_window(reservation: Reservation, *, now: datetime, report: TickReport) -> None:
    """A window that is over: a launched reservation ended; one never launched failed."""
    if reservation.status in selectors.LAUNCHED:
        services.reservation_mark_ended(reservation=reservation, now=now)
        report.ended.append(reservation.pk)
        return
    reason = reservation.status_message or "its container never started"
    message = f"The reservation's window passed without a container: {reason}"
    if services.reservation_mark_failed(reservation=reservation, now=now, message=message):
        report.failed.append(reservation.pk)
        services.event_log(
            level=Level.WARNING,
            sign="NeverStarted",
            message=f"{reservation.user.username}'s reservation #{reservation.pk} "
            f"ended unlaunched ({reason})",
            reservation=reservation,
            now=now,
        )


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
    for state in containers:
        runtime.remove(state.id)
        report.removed.append(state.name)
        reservation = reservations.get(state.reservation_id)
        if reservation is None:
            services.event_log(
                level=Level.WARNING,
                sign="OrphanContainer",
                message=f"Removed container {state.name}, which no reservation owns",
                host=host,
                now=now,
            )
            continue
        if reservation.status in selectors.LAUNCHED:
            # Its window is over (released early, or ended while the engine was down).
            services.reservation_mark_ended(reservation=reservation, now=now)
        services.event_log(
            level=Level.INFO,
            message=f"{reservation.user.username}'s container {state.name} was stopped and removed "
            f"(reservation #{reservation.pk} {reservation.get_status_display().lower()})",
            reservation=reservation,
            now=now,
        )


def _converge(
    reservation: Reservation,
    *,
    container: ContainerState | None,
    runtime: ContainerRuntime,
    now: datetime,
    report: TickReport,
) -> None:
    username = reservation.user.username
    if reservation.restart_requested:
        if container is not None:
            runtime.remove(container.id)
        services.reservation_clear_restart_request(reservation=reservation)
        services.event_log(
            level=Level.INFO,
            message=f"{username}'s container is recreated at a maintainer's request",
            reservation=reservation,
            now=now,
        )
        _launch(reservation, runtime=runtime, now=now, report=report)
        return
    if container is not None and container.is_running:
        if reservation.status != Status.RUNNING or reservation.container_id != container.id:
            # A tick that died after starting the container: adopt what runs.
            services.reservation_mark_running(reservation=reservation, container_id=container.id, now=now)
        return
    if container is not None:
        runtime.remove(container.id)
    died = reservation.status == Status.RUNNING
    if died and not _count_restart(reservation, container=container, now=now, report=report):
        return
    _launch(reservation, runtime=runtime, now=now, report=report)


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
        services.event_log(
            level=Level.ERROR,
            sign="ContainerDied",
            message=f"{username}'s container {what}; {limit} restarts used, reservation failed",
            reservation=reservation,
            now=now,
        )
        return False
    count = services.reservation_count_restart(reservation=reservation)
    services.event_log(
        level=Level.WARNING,
        sign="ContainerDied",
        message=f"{username}'s container {what} during the reservation; restarting it ({count} of {limit})",
        reservation=reservation,
        now=now,
    )
    return True


def _space_block_message(reservation: Reservation) -> str | None:
    """The figures that keep the user's container from launching, or None to launch."""
    audit = selectors.space_verdict(user_id=reservation.user_id, host=reservation.host)
    if audit is None or not audit.over_quota:
        return None
    capability = capability_for(user=reservation.user, host=reservation.host)
    return (
        f"Over the space quota: work folder {audit.work_gb:g} GB of {capability.work_space_gb} GB, "
        f"backup folder {audit.backup_gb:g} GB of {capability.backup_space_gb} GB. "
        "Free some space; the container starts once a check finds you under quota."
    )


def _launch(
    reservation: Reservation, *, runtime: ContainerRuntime, now: datetime, report: TickReport
) -> None:
    username = reservation.user.username
    # Only a first launch waits for space; a container that died mid-window comes back.
    blocked = _space_block_message(reservation) if reservation.status in selectors.STARTS_PENDING else None
    if blocked:
        if reservation.status != Status.BLOCKED and services.reservation_mark_blocked(
            reservation=reservation, message=blocked
        ):
            report.blocked.append(reservation.pk)
            services.event_log(
                level=Level.WARNING,
                sign="SpaceWarning",
                message=f"{username} is over quota, container not started. {blocked}",
                reservation=reservation,
                now=now,
            )
        return
    if not services.reservation_mark_starting(reservation=reservation):
        return  # cancelled or ended meanwhile
    image = reservation.image.reference if reservation.image else ""
    try:
        if not image:
            raise ImageMissing("the reservation names no image")
        spec = container_spec(reservation=reservation, image=image, mounts=prepare_mounts(reservation))
        state = runtime.run(spec)
    except EngineUnavailable:
        raise
    except ImageMissing as error:
        _fail_launch(
            reservation,
            now=now,
            report=report,
            sign="ImageMissing",
            message=f"The image {image or '(none)'} is not on {reservation.host.name}; "
            f"ask a maintainer to pull it or book another image ({error})",
        )
        return
    except FolderProblem as error:
        _fail_launch(reservation, now=now, report=report, sign="FolderProblem", message=str(error))
        return
    except RuntimeProblem as error:
        _retry_launch(reservation, now=now, report=report, error=error)
        return
    services.reservation_mark_running(reservation=reservation, container_id=state.id, now=now)
    report.started.append(reservation.pk)
    gpus = ",".join(spec.gpu_ids) or "none"
    services.event_log(
        level=Level.INFO,
        message=f"{username} is successfully run the container {spec.name} "
        f"(cpus {reservation.cpus.normalize():f}, memory {reservation.memory_gb} GB, "
        f"GPUs {gpus}, port {spec.ssh_port})",
        reservation=reservation,
        now=now,
    )


def _fail_launch(
    reservation: Reservation, *, now: datetime, report: TickReport, sign: str, message: str
) -> None:
    services.reservation_mark_failed(reservation=reservation, now=now, message=message)
    report.failed.append(reservation.pk)
    services.event_log(
        level=Level.ERROR,
        sign=sign,
        message=f"{reservation.user.username}'s container did not start: {message}",
        reservation=reservation,
        now=now,
    )


def _retry_launch(reservation: Reservation, *, now: datetime, report: TickReport, error: Exception) -> None:
    """The engine refused for a reason that may pass (a port in use, a name taken): the
    next tick tries again, a bounded number of times."""
    limit = settings.CONTAINER_MAX_RESTARTS
    if reservation.restart_count >= limit:
        _fail_launch(
            reservation,
            now=now,
            report=report,
            sign="LaunchError",
            message=f"{error} (tried {limit + 1} times)",
        )
        return
    count = services.reservation_count_restart(reservation=reservation)
    report.errors.append(str(error))
    services.event_log(
        level=Level.ERROR,
        sign="LaunchError",
        message=f"{reservation.user.username}'s container did not start ({error}); "
        f"trying again next tick ({count} of {limit})",
        reservation=reservation,
        now=now,
    )


# Exact-time wake-ups -----------------------------------------------------------------


def _ensure_waker(*, now: datetime) -> None:
    """Queues a waker when a start or end is near and none runs; called by every tick."""
    if selectors.next_boundary(after=now, until=now + WAKE_HORIZON) is None:
        return
    with exclusive("waker") as free:
        pass
    if free:
        queue_task(WAKER_TASK)


def wake_at_boundaries() -> str:
    """Sleeps until each start or end instant that is near and reconciles right then, so
    a container runs within seconds of its start and is gone within seconds of its end.
    One waker at a time; it exits when nothing is near and hands over after a while, so
    it never outlives django-q's task timeout."""
    fired = 0
    with exclusive("waker") as acquired:
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


# Space audit -------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderSize:
    bytes: int
    complete: bool


def folder_size(path: Path, *, deadline: float) -> FolderSize:
    """Disk use of a folder tree (like du), symlinks not followed, hard links counted once.
    Past `deadline` (time.monotonic) it stops and says the size is incomplete."""
    total, seen = 0, set()
    pending = [path]
    while pending:
        if time.monotonic() > deadline:
            return FolderSize(total, complete=False)
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        except OSError:
            return FolderSize(total, complete=False)
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return FolderSize(total, complete=True)


def audit_user_space(*, user_id: int, host: Host, now: datetime, timeout_s: float) -> bool:
    """Measures one user's work and backup folders on a host and records the result.
    A timed-out measurement is over quota only if what it counted already is; otherwise
    it is unknown and does not lift a block. Returns whether the user is over quota."""
    user = User.objects.get(pk=user_id)
    capability = capability_for(user=user, host=host)
    deadline = time.monotonic() + timeout_s
    work = folder_size(Path(host.work_root) / user.username, deadline=deadline)
    backup = folder_size(Path(host.backup_root) / user.username, deadline=deadline)
    work_gb, backup_gb = work.bytes / GIB, backup.bytes / GIB
    over = work_gb > capability.work_space_gb or backup_gb > capability.backup_space_gb
    complete = work.complete and backup.complete
    services.space_audit_record(
        user_id=user_id,
        host=host,
        work_gb=work_gb,
        backup_gb=backup_gb,
        complete=complete,
        over_quota=over,
        now=now,
    )
    if over:
        services.event_log(
            level=Level.WARNING,
            sign="SpaceWarning",
            message=f"{user.username} is over-use the work_dir {work_gb:.1f}GB "
            f"of {capability.work_space_gb}GB, "
            f"and backup_dir {backup_gb:.1f}GB of {capability.backup_space_gb}GB",
            user=user,
            host=host,
            now=now,
        )
    elif not complete:
        services.event_log(
            level=Level.WARNING,
            sign="SpaceAuditTimeout",
            message=f"The size of {user.username}'s folders on {host.name} is unknown: "
            f"measuring took longer than {timeout_s:g} s",
            user=user,
            host=host,
            now=now,
        )
    elif selectors.blocked_reservations(user_id=user_id, host=host).exists():
        services.event_log(
            level=Level.INFO,
            message=f"{user.username} is back under quota; the blocked reservation launches",
            user=user,
            host=host,
            now=now,
        )
        queue_task(RECONCILE_TASK)
    return over


def space_audit(host_id: int | None = None) -> str:
    """Queues one audit per user with a reservation running now or starting within the
    hour: each gets the whole SPACE_AUDIT_TIMEOUT, inside django-q's task timeout."""
    queued = 0
    for host in selectors.hosts_to_reconcile(host_id=host_id):
        now = timezone.now()
        for user_id in selectors.users_to_audit(host=host, now=now, until=now + SPACE_AUDIT_AHEAD):
            queue_task(USER_AUDIT_TASK, user_id=user_id, host_id=host.pk)
            queued += 1
    return f"queued {queued} audits"


def space_audit_user(*, user_id: int, host_id: int) -> str:
    host = Host.objects.get(pk=host_id)
    over = audit_user_space(
        user_id=user_id, host=host, now=timezone.now(), timeout_s=settings.SPACE_AUDIT_TIMEOUT
    )
    return "over quota" if over else "within quota or unknown"


# GPU telemetry ---------------------------------------------------------------------------


def sample_gpus() -> int:
    """Every minute: stores a sample per GPU, warns about duplicate use, flags idle
    reservations. Returns how many samples were stored."""
    host = telemetry_host()
    if host is None:
        logger.info("No Host matches this machine; set GPU_HOST_NAME to sample its GPUs.")
        return 0
    result = gpus.probe()
    now = timezone.now()
    samples = gpu_samples_record(host=host, result=result, now=now)
    gpu_duplicate_use_check(host=host, result=result, now=now)
    reservation_idle_update(host=host, now=now)
    return len(samples)


def sync_gpu_inventory() -> int:
    """Every hour: brings the GPU rows in line with what NVML reports. Returns how many
    events it wrote."""
    host = telemetry_host()
    if host is None:
        logger.info("No Host matches this machine; set GPU_HOST_NAME to sync its GPUs.")
        return 0
    return len(gpu_inventory_sync(host=host, result=gpus.probe()))


def prune_gpu_samples() -> int:
    """Daily: drops samples older than GPU_SAMPLE_RETENTION_DAYS."""
    return gpu_samples_prune()


# Agents ------------------------------------------------------------------------------------


def check_agents() -> str:
    """Central, every minute: an ERROR line for each agent that stopped answering (its
    return is written by the agent's own next heartbeat)."""
    return f"{len(agent_silence_check(now=timezone.now()))} agent(s) went silent"
