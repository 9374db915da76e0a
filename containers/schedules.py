"""The scheduler's periodic tasks. Central ones run in the central scheduler's cluster;
each host's local work runs in the cluster of whoever serves that host: its own agent,
or for a host without one, the central scheduler through the central entries (which skip
hosts that have an agent)."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet
from django_q.models import Schedule

from aivc_portal.clusters import agent_cluster
from containers.models import Host

# A per-host schedule is named "<name> @ <host>" and queued to that host's agent.
HOST_SEPARATOR = " @ "
# Its tasks carry this name as their group: the central scheduler's sign of life
# (containers.agent_selectors.central_scheduler_health).
RECONCILE_SCHEDULE = "reconcile containers"


def host_local_schedules() -> list[dict]:
    """Work that must run on the server itself: its engine, folders, disks and GPUs."""
    return [
        {
            "name": RECONCILE_SCHEDULE,
            "func": "containers.tasks.reconcile",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
        },
        {
            "name": "sample GPUs",
            "func": "containers.tasks.sample_gpus",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
        },
        {
            "name": "sync GPU inventory",
            "func": "containers.tasks.sync_gpu_inventory",
            "schedule_type": Schedule.HOURLY,
        },
        {
            "name": "audit space",
            "func": "containers.tasks.space_audit",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.SPACE_AUDIT_MINUTES,
        },
        {
            "name": "prune built images",
            "func": "containers.tasks.prune_built_images",
            "schedule_type": Schedule.HOURLY,
        },
    ]


def central_schedules() -> list[dict]:
    return [
        # The central scheduler does the local work of hosts without an agent.
        *host_local_schedules(),
        {
            "name": "prune GPU samples",
            "func": "containers.tasks.prune_gpu_samples",
            "schedule_type": Schedule.DAILY,
        },
        {
            # Contexts of cancelled jobs and half-done submits, on the web's disk.
            "name": "sweep build contexts",
            "func": "jobs.tasks.sweep_build_contexts",
            "schedule_type": Schedule.HOURLY,
        },
        {
            "name": "schedule jobs",
            "func": "jobs.tasks.schedule_jobs",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
        },
        {
            # Also queued right after a cancel or a release (bookings.services).
            "name": "book waiting requests",
            "func": "bookings.tasks.book_waiting_requests",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
        },
        {
            "name": "end limit grants",
            "func": "accounts.tasks.expire_limit_grants",
            "schedule_type": Schedule.MINUTES,
            "minutes": 10,
        },
        {
            "name": "check agents",
            "func": "containers.tasks.check_agents",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
        },
        {
            # Its own task, so a slow mail server never delays a reconcile tick.
            "name": "notify users",
            "func": "accounts.tasks.send_notifications",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
        },
    ]


def _save(spec: dict, *, cluster: str | None) -> tuple[str, bool]:
    fields = {key: value for key, value in spec.items() if key != "name"}
    _, created = Schedule.objects.update_or_create(
        name=spec["name"], defaults={**fields, "repeats": -1, "cluster": cluster}
    )
    return spec["name"], created


def schedules_ensure_for_host(*, host: Host) -> list[tuple[str, bool]]:
    """Creates or updates the host's own schedules, queued to its agent's cluster."""
    cluster = agent_cluster(host.name)
    return [
        _save({**spec, "name": f"{spec['name']}{HOST_SEPARATOR}{host.name}"}, cluster=cluster)
        for spec in host_local_schedules()
    ]


def schedules_ensure(*, hosts: QuerySet[Host] | None = None) -> list[tuple[str, bool]]:
    """Idempotent: the central schedules, and each host's own; the own schedules of hosts
    that no longer exist (or were renamed) are removed. Returns (name, created) pairs."""
    hosts = list(hosts if hosts is not None else Host.objects.all())
    done = [_save(spec, cluster=None) for spec in central_schedules()]
    for host in hosts:
        done += schedules_ensure_for_host(host=host)
    kept = {name for name, _ in done}
    Schedule.objects.filter(name__contains=HOST_SEPARATOR).exclude(name__in=kept).delete()
    return done
