"""Reads about agents: which hosts this process serves, and how each host's agent is."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Max, QuerySet
from django.utils.translation import gettext_lazy as _
from django_q.models import Task

from containers.models import Host, HostAgent
from containers.schedules import RECONCILE_SCHEDULE

# Three missed heartbeats make an agent stale; ten minutes of silence, offline.
STALE_AFTER_BEATS = 3
OFFLINE_AFTER = timedelta(minutes=10)


class Health(models.TextChoices):
    ONLINE = "online", _("online")
    STALE = "stale", _("stale")
    OFFLINE = "offline", _("offline")
    # No agent of its own: the central scheduler serves it (a one-server lab).
    CENTRAL = "central", _("served centrally")


def stale_after() -> timedelta:
    return timedelta(seconds=settings.AGENT_HEARTBEAT_SECONDS * STALE_AFTER_BEATS)


def served_hosts() -> QuerySet[Host]:
    """The hosts whose engine, folders, disks and GPUs this process looks after: an agent
    (AIVC_HOST) its own host only; the central scheduler every host without an agent."""
    if settings.AIVC_HOST:
        return Host.objects.filter(name=settings.AIVC_HOST)
    return Host.objects.filter(served_by_agent=False)


def health_since(*, last_seen: datetime | None, now: datetime) -> Health:
    """How alive something is that last gave a sign of life at `last_seen`."""
    if last_seen is None:
        return Health.OFFLINE
    silence = now - last_seen
    if silence <= stale_after():
        return Health.ONLINE
    return Health.STALE if silence <= OFFLINE_AFTER else Health.OFFLINE


def agent_health(*, agent: HostAgent | None, now: datetime) -> Health:
    return health_since(last_seen=agent.last_seen_at if agent else None, now=now)


def host_health(*, host: Host, now: datetime) -> Health:
    """How the host's agent answers; `host.agent` is read, so select_related it for lists."""
    if not host.served_by_agent:
        return Health.CENTRAL
    try:
        agent = host.agent
    except HostAgent.DoesNotExist:
        agent = None
    return agent_health(agent=agent, now=now)


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


def hosts_with_health(*, now: datetime, hosts: QuerySet[Host] | None = None) -> list[tuple[Host, Health]]:
    hosts = (hosts if hosts is not None else Host.objects.all()).select_related("agent")
    return [(host, host_health(host=host, now=now)) for host in hosts]


def agents_gone_silent(*, now: datetime) -> QuerySet[HostAgent]:
    """Agents of hosts served by an agent that stopped answering and were not reported yet."""
    return HostAgent.objects.filter(
        host__served_by_agent=True, silent_since__isnull=True, last_seen_at__lt=now - stale_after()
    ).select_related("host")
