"""Writes from GPU telemetry: inventory sync, samples, duplicate-use warnings, idle flags
(and the maintainers' optional automatic release) and pruning. Each takes a ProbeResult
read by the caller, so tests hand in a FakeProbe's and the tasks the real one's."""

import logging
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from bookings.models import GpuAllocation, Reservation
from bookings.services import reservation_release
from containers.events import (
    GPU_DUPLICATE_WARNING,
    GPU_IDLE_RELEASE,
    GPU_IDLE_WARNING,
    GPU_INVENTORY_ERROR,
    GPU_RENUMBERED,
    INFO,
    Event,
)
from containers.gpus import GpuProcess, GpuReading, ProbeResult
from containers.models import ContainerEvent, Gpu, Host
from containers.services import event_record
from containers.telemetry.models import GpuDuplicateUse, GpuSample, ReservationGpuStatus
from containers.telemetry.processes import container_id_for_pid, same_container
from containers.telemetry.selectors import (
    current_gpu_holders,
    gpus_just_given_up,
    reservation_idle_state,
    reservations_with_containers,
)

logger = logging.getLogger(__name__)


# Inventory ---------------------------------------------------------------------------


def _identity_changes(gpu: Gpu, reading: GpuReading) -> list[str]:
    """What differs between the row and the device at its index. A blank row field was never
    known (created by hand or imported), so filling it in is no change."""
    pairs = (
        ("uuid", gpu.uuid, reading.uuid),
        ("name", gpu.name, reading.name),
        ("memory", gpu.memory_mb, reading.memory_total_mb),
    )
    return [f"{label} {old} -> {new}" for label, old, new in pairs if old and old != new]


# Far above any real GPU index: where rows wait while their indices are exchanged.
PARKED_INDEX = 30000


@transaction.atomic
def gpu_renumber_sync(
    *, host: Host, result: ProbeResult, now: datetime | None = None
) -> list[ContainerEvent]:
    """A reboot may number the same GPUs differently. Each row follows its UUID to the
    index NVML gives it now, so allocations (and the device requests made by UUID) stay on
    the same physical GPU; a row left on a taken index by a GPU that no longer reports is
    parked out of service. One WARNING names the moves."""
    if not result.available:
        return []
    rows = list(Gpu.objects.select_for_update().filter(host=host).order_by("index"))
    by_uuid = {gpu.uuid: gpu for gpu in rows if gpu.uuid}
    moves = [
        (by_uuid[reading.uuid], reading.index)
        for reading in result
        if reading.uuid in by_uuid and by_uuid[reading.uuid].index != reading.index
    ]
    if not moves:
        return []
    moving = {gpu.pk for gpu, _ in moves}
    described = ", ".join(f"GPU {gpu.index} -> {index} ({gpu.uuid})" for gpu, index in moves)
    targets = {index for _, index in moves}
    parked = [gpu for gpu in rows if gpu.index in targets and gpu.pk not in moving]
    free_index = max([gpu.index for gpu in rows] + [reading.index for reading in result]) + 1
    for offset, gpu in enumerate(parked):
        gpu.index, gpu.is_active = free_index + offset, False
        gpu.save(update_fields=["index", "is_active"])
    # Two steps, since the (host, index) pairs must stay unique after every row's update.
    for offset, (gpu, _) in enumerate(moves):
        gpu.index = PARKED_INDEX + offset
        gpu.save(update_fields=["index"])
    for gpu, index in moves:
        gpu.index = index
        gpu.save(update_fields=["index"])
    message = (
        f"The GPUs of {host.name} were renumbered (after a reboot?): {described}; "
        "every allocation stays on the same physical GPU"
    )
    if parked:
        message += f"; out of service until checked: {', '.join(gpu.uuid or str(gpu.pk) for gpu in parked)}"
    return [event_record(event=Event(GPU_RENUMBERED, message), now=now or timezone.now(), host=host)]


@transaction.atomic
def gpu_inventory_sync(
    *, host: Host, result: ProbeResult, now: datetime | None = None
) -> list[ContainerEvent]:
    """Makes the host's GPU rows match what NVML reports. A new GPU is added; a changed one
    is updated and a GPU that vanished is taken out of service, both with an ERROR event.
    An unavailable probe changes nothing: no driver is not the same as no GPUs."""
    if not result.available:
        return []
    now = now or timezone.now()
    events = gpu_renumber_sync(host=host, result=result, now=now)
    rows = {gpu.index: gpu for gpu in Gpu.objects.select_for_update().filter(host=host)}
    for reading in result:
        gpu = rows.get(reading.index)
        if gpu is None:
            gpu = Gpu.objects.create(
                host=host,
                index=reading.index,
                uuid=reading.uuid,
                name=reading.name,
                memory_mb=reading.memory_total_mb,
            )
            message = f"{gpu} found: {reading.name} ({reading.uuid}), {reading.memory_total_mb} MiB"
            events.append(event_record(event=Event(INFO, message), now=now, host=host))
            continue
        changes = _identity_changes(gpu, reading)
        if changes:
            message = f"{gpu} changed: {'; '.join(changes)}; check the hardware and its bookings"
            events.append(event_record(event=Event(GPU_INVENTORY_ERROR, message), now=now, host=host))
        gpu.uuid, gpu.name, gpu.memory_mb = reading.uuid, reading.name, reading.memory_total_mb
        gpu.save(update_fields=["uuid", "name", "memory_mb"])
    present = {reading.index for reading in result}
    for index, gpu in rows.items():
        if index in present or not gpu.is_active:
            continue
        gpu.is_active = False
        gpu.save(update_fields=["is_active"])
        held = GpuAllocation.objects.filter(gpu=gpu, active=True, end__gt=now).count()
        message = (
            f"{gpu} ({gpu.uuid or 'no uuid'}) is no longer reported by NVML; it is out of service "
            f"until a maintainer turns it back on, and {held} live allocation(s) still name it"
        )
        events.append(event_record(event=Event(GPU_INVENTORY_ERROR, message), now=now, host=host))
    return events


# Samples -----------------------------------------------------------------------------


def gpu_samples_record(*, host: Host, result: ProbeResult, now: datetime | None = None) -> list[GpuSample]:
    """Stores one sample per known GPU of the host. A GPU not yet in the inventory is left
    to the inventory sync."""
    if not result.available:
        return []
    now = now or timezone.now()
    rows = {gpu.index: gpu for gpu in Gpu.objects.filter(host=host)}
    unknown = [reading.index for reading in result if reading.index not in rows]
    if unknown:
        logger.info("GPUs %s of %s are not in the inventory yet; not sampled.", unknown, host)
    return GpuSample.objects.bulk_create(
        GpuSample(
            gpu=rows[reading.index],
            taken_at=now,
            utilisation_percent=reading.utilisation_percent,
            memory_used_mb=reading.memory_used_mb,
            process_count=len(reading.processes),
        )
        for reading in result
        if reading.index in rows
    )


def gpu_samples_prune(*, now: datetime | None = None, retention_days: int | None = None) -> int:
    """Deletes samples (and duplicate-use sightings) older than the retention; returns how
    many samples went."""
    now = now or timezone.now()
    days = settings.GPU_SAMPLE_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = now - timedelta(days=days)
    deleted, _ = GpuSample.objects.filter(taken_at__lt=cutoff).delete()
    GpuDuplicateUse.objects.filter(last_seen_at__lt=cutoff).delete()
    return deleted


# Duplicate use -----------------------------------------------------------------------

# How long a container may stay on a GPU after its reservation gave the GPU up: until the
# next reconcile tick removes it (a minute), or a job's stop waits out its grace period.
STOPPING_GRACE = timedelta(minutes=5)


def _is_foreign(*, container_id: str | None, holder: Reservation | None) -> bool:
    """The rule: a process may use a GPU only from the container of the reservation that
    holds the GPU now."""
    if holder is None:
        return True
    if holder.status == Reservation.Status.STARTING and not holder.container_id:
        # Its container is being created and its id is not recorded yet: nothing to compare.
        return False
    return not same_container(container_id, holder.container_id)


def _duplicate_message(
    *,
    gpu: Gpu,
    process: GpuProcess,
    container_id: str | None,
    owner: Reservation | None,
    holder: Reservation | None,
) -> str:
    memory = f" using {process.used_memory_mb} MiB" if process.used_memory_mb is not None else ""
    where = f"container {container_id[:12]}" if container_id else "no container (a host process)"
    whose = f" of reservation #{owner.pk} ({owner.user.username})" if owner else ""
    held = (
        f"reservation #{holder.pk} ({holder.user.username}) holds it" if holder else "no reservation holds it"
    )
    return f"{gpu} ({gpu.uuid}) runs process {process.pid}{memory} in {where}{whose}, but {held}"


def _record_duplicate_use(
    *,
    gpu: Gpu,
    process: GpuProcess,
    container_id: str | None,
    holder: Reservation | None,
    owner: Reservation | None,
    now: datetime,
) -> ContainerEvent | None:
    """One warning per GPU, pid and holder; later sightings only move last_seen_at."""
    with transaction.atomic():
        sighting, created = GpuDuplicateUse.objects.get_or_create(
            gpu=gpu,
            pid=process.pid,
            holder=holder,
            defaults={"container_id": container_id or "", "first_seen_at": now, "last_seen_at": now},
        )
        if not created:
            GpuDuplicateUse.objects.filter(pk=sighting.pk).update(last_seen_at=now)
            return None
        event = event_record(
            event=Event(
                GPU_DUPLICATE_WARNING,
                _duplicate_message(
                    gpu=gpu, process=process, container_id=container_id, owner=owner, holder=holder
                ),
            ),
            now=now,
            host=gpu.host,
            reservation=holder,
            user=owner.user if owner else None,
        )
        sighting.event = event
        sighting.save(update_fields=["event"])
    return event


def gpu_duplicate_use_check(
    *,
    host: Host,
    result: ProbeResult,
    now: datetime | None = None,
    proc_root: str | Path | None = None,
) -> list[ContainerEvent]:
    """Warns (GPUDuplicateWarning) about every compute process on a GPU that no live
    reservation holds, or that runs outside the holder's container."""
    if not result.available:
        return []
    now = now or timezone.now()
    proc_root = proc_root or settings.GPU_PROC_ROOT
    rows = {gpu.index: gpu for gpu in Gpu.objects.filter(host=host).select_related("host")}
    holders = current_gpu_holders(host=host, now=now)
    leaving = gpus_just_given_up(host=host, now=now, within=STOPPING_GRACE)
    portal_containers = reservations_with_containers(host=host)
    events = []
    for reading in result:
        gpu = rows.get(reading.index)
        if gpu is None:
            continue
        holder = holders.get(gpu.pk)
        for process in reading.processes:
            container_id = container_id_for_pid(process.pid, proc_root=proc_root)
            if not _is_foreign(container_id=container_id, holder=holder):
                continue
            if any(same_container(container_id, r.container_id) for r in leaving.get(gpu.pk, ())):
                continue  # the last holder's own container, not removed yet
            owner = next(
                (r for r in portal_containers if same_container(container_id, r.container_id)),
                None,
            )
            event = _record_duplicate_use(
                gpu=gpu, process=process, container_id=container_id, holder=holder, owner=owner, now=now
            )
            if event is not None:
                events.append(event)
    return events


# Idle reservations -------------------------------------------------------------------


def _auto_release(*, reservation: Reservation, status: ReservationGpuStatus, now: datetime) -> None:
    try:
        reason = (
            f"Its GPUs stayed idle for {settings.GPU_IDLE_RELEASE_GRACE_MINUTES} minutes after the idle "
            "warning, so the portal released it for others."
        )
        reservation_release(
            reservation=reservation, now=now, reason=reason, ended_by=Reservation.EndedBy.SYSTEM
        )
    except ValidationError as error:
        logger.warning("Could not release idle reservation #%s: %s", reservation.pk, error)
        return
    status.auto_released_at = now
    status.save(update_fields=["auto_released_at"])
    message = (
        f"Reservation #{reservation.pk} of {reservation.user.username} was released: its GPUs stayed "
        f"idle for {settings.GPU_IDLE_RELEASE_GRACE_MINUTES} minutes after the idle warning"
    )
    event_record(
        event=Event(GPU_IDLE_RELEASE, message),
        now=now,
        host=reservation.host,
        reservation=reservation,
        user=reservation.user,
    )


def _update_idle_flag(*, reservation: Reservation, now: datetime) -> ReservationGpuStatus:
    status, _ = ReservationGpuStatus.objects.get_or_create(reservation=reservation)
    idle = reservation_idle_state(reservation=reservation, now=now)
    status.checked_at = now
    if idle is True and status.idle_flagged_at is None:
        status.idle_flagged_at = now
        message = (
            f"Reservation #{reservation.pk} of {reservation.user.username}: GPUs "
            f"{', '.join(map(str, reservation.gpu_indices()))} stayed under "
            f"{settings.GPU_IDLE_UTILISATION_PERCENT}% utilisation for {settings.GPU_IDLE_MINUTES} minutes"
        )
        if settings.GPU_IDLE_AUTO_RELEASE:
            message += (
                f"; it is released in {settings.GPU_IDLE_RELEASE_GRACE_MINUTES} minutes unless they get busy"
            )
        event_record(
            event=Event(GPU_IDLE_WARNING, message),
            now=now,
            host=reservation.host,
            reservation=reservation,
            user=reservation.user,
        )
    elif idle is False:
        status.idle_flagged_at = None
    status.save(update_fields=["checked_at", "idle_flagged_at"])
    grace = timedelta(minutes=settings.GPU_IDLE_RELEASE_GRACE_MINUTES)
    # Only on fresh evidence of idleness: a stopped sampler must never release anything.
    if idle is True and settings.GPU_IDLE_AUTO_RELEASE and now - status.idle_flagged_at >= grace:
        _auto_release(reservation=reservation, status=status, now=now)
    return status


def reservation_idle_update(*, host: Host, now: datetime | None = None) -> list[ReservationGpuStatus]:
    """Flags (and clears) idle running reservations on the host, releasing a flagged one
    after the grace period when GPU_IDLE_AUTO_RELEASE is on."""
    now = now or timezone.now()
    # Bookings only: a batch job ends by itself at its time limit, never by an idle release.
    running = (
        Reservation.objects.bookings()
        .filter(
            host=host,
            status=Reservation.Status.RUNNING,
            start__lte=now,
            end__gt=now,
            gpu_count__gt=0,
        )
        .select_related("user", "host")
    )
    return [_update_idle_flag(reservation=reservation, now=now) for reservation in running]
