"""Scheduler entry points (django-q2). Each is thin: it calls the lifecycle, the space
audit or telemetry. The dotted names are kept stable, since schedules stored in existing
databases and tasks queued by services (by name) point at them."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from containers import image_services, job_builds, lifecycle, selectors, space
from containers.agent_services import agent_silence_check
from containers.models import Host
from containers.runtime import RuntimeProblem, get_runtime
from containers.telemetry import tasks as telemetry_tasks


def reconcile(host_id: int | None = None, *, wake: bool = True) -> str:
    """One tick over every host (or one); a one-line summary for django-q."""
    return str(lifecycle.reconcile(host_id=host_id, wake=wake))


def wake_at_boundaries() -> str:
    return lifecycle.wake_at_boundaries()


def prepare_image(reservation_id: int) -> str:
    """Queued when a reservation is made: the image is present, or pulled, before the start."""
    return image_services.image_prepare_for_reservation(
        reservation_id=reservation_id, runtime_for=get_runtime, now=timezone.now()
    )


def space_audit(host_id: int | None = None) -> str:
    return f"queued {space.queue_audits(host_id=host_id)} audits"


def space_audit_user(*, user_id: int, host_id: int) -> str:
    host = Host.objects.get(pk=host_id)
    over = space.audit_user_space(
        user_id=user_id, host=host, now=timezone.now(), timeout_s=settings.SPACE_AUDIT_TIMEOUT
    )
    return "over quota" if over else "within quota or unknown"


def prune_built_images(host_id: int | None = None) -> str:
    """Hourly on each host: the images DoPQ builds made that no job used lately, or all the
    idle ones while the engine's disk is low (containers/job_builds.py)."""
    removed, unreachable = 0, 0
    for host in selectors.hosts_to_reconcile(host_id=host_id):
        try:
            pruned = job_builds.built_images_prune(runtime=get_runtime(host), host=host, now=timezone.now())
            removed += len(pruned)
        except RuntimeProblem:
            unreachable += 1
    return f"removed {removed} built image(s); {unreachable} engine(s) did not answer"


# GPU telemetry: the work is in the telemetry app; these names stay because stored
# schedules call them.


def sample_gpus() -> int:
    return telemetry_tasks.sample_gpus()


def sync_gpu_inventory() -> int:
    return telemetry_tasks.sync_gpu_inventory()


def prune_gpu_samples() -> int:
    return telemetry_tasks.prune_gpu_samples()


# Agents: the central check; each agent writes its own heartbeat.


def check_agents() -> str:
    """Central, every minute: an ERROR line for each agent that stopped answering (its
    return is written by the agent's own next heartbeat)."""
    return f"{len(agent_silence_check(now=timezone.now()))} agent(s) went silent"
