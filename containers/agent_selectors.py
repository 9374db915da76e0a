"""Reads about agents: which hosts this process serves, what serves each host, which agents
went silent. How one host's agent is lives below, in `containers.inventory_selectors`."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import Max, QuerySet
from django_q.models import Task

from containers.inventory_selectors import Health, health_since, hosts_with_health, stale_after
from containers.models import Host, HostAgent
from containers.schedules import RECONCILE_SCHEDULE


def served_hosts() -> QuerySet[Host]:
    """The hosts whose engine, folders, disks and GPUs this process looks after: an agent
    (AIVC_HOST) its own host only; the central scheduler every host without an agent."""
    if settings.AIVC_HOST:
        return Host.objects.filter(name=settings.AIVC_HOST)
    return Host.objects.filter(served_by_agent=False)


def central_scheduler_health(*, now: datetime) -> Health:
    """The central scheduler writes no heartbeat of its own; what shows it alive is its
    minutely reconcile (the schedule's name is its tasks' group; a host agent's are
    "<name> @ <host>") finishing. Its last finished run (success or failure: both mean the
    cluster works) counts as its heartbeat, with the agents' thresholds."""
    last_run = Task.objects.filter(group=RECONCILE_SCHEDULE).aggregate(last=Max("stopped"))["last"]
    return health_since(last_seen=last_run, now=now)


def serving_health(*, now: datetime) -> dict[str, Health]:
    """Host name -> the health of whatever serves it: its agent, or for a host without one
    the central scheduler (read once)."""
    pairs = hosts_with_health(now=now, hosts=Host.objects.order_by("name"))
    central = None
    result = {}
    for host, health in pairs:
        if health == Health.CENTRAL:
            central = central or central_scheduler_health(now=now)
            health = central
        result[host.name] = health
    return result


def agents_gone_silent(*, now: datetime) -> QuerySet[HostAgent]:
    """Agents of hosts served by an agent that stopped answering and were not reported yet."""
    return HostAgent.objects.filter(
        host__served_by_agent=True, silent_since__isnull=True, last_seen_at__lt=now - stale_after()
    ).select_related("host")
