"""Writes about agents: the lease that lets one agent, and only one, serve a host, its
heartbeat, and the monitor-log lines when an agent goes silent and comes back.

The lease is a row with an expiry rather than a database lock: it works on SQLite for a
one-server lab as on PostgreSQL, survives a dropped connection, and a crashed agent's
claim lapses on its own after AGENT_LEASE_BEATS missed heartbeats."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from containers.agent_selectors import agents_gone_silent
from containers.events import AGENT_BACK, AGENT_SILENT, Event
from containers.models import ContainerEvent, Host, HostAgent
from containers.services import event_record

AGENT_LEASE_BEATS = 3


@dataclass(frozen=True)
class AgentFacts:
    """What an agent reports about its server with each heartbeat."""

    version: str = ""
    engine_version: str = ""
    nvml_driver: str = ""
    cuda_driver_version: str = ""
    disk_free_gb: dict[str, float | None] = field(default_factory=dict)


def lease_length() -> timedelta:
    return timedelta(seconds=settings.AGENT_HEARTBEAT_SECONDS * AGENT_LEASE_BEATS)


def _lease_is_free(*, holder: str, now: datetime) -> Q:
    return Q(holder="") | Q(holder=holder) | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def agent_claim(*, host: Host, holder: str, now: datetime) -> HostAgent:
    """Makes `holder` the host's agent, if no other agent holds it; from then on the host's
    work is queued to its agent. Raises ValidationError naming the current holder."""
    agent, _ = HostAgent.objects.get_or_create(host=host)
    # One conditional UPDATE: of two agents claiming at once, the database lets one win.
    claimed = (
        HostAgent.objects.filter(pk=agent.pk)
        .filter(_lease_is_free(holder=holder, now=now))
        .update(holder=holder, lease_expires_at=now + lease_length(), started_at=now, last_seen_at=now)
    )
    agent.refresh_from_db()
    if not claimed:
        raise ValidationError(
            f"Host {host.name} is already served by the agent {agent.holder} "
            f"(last seen {timezone.localtime(agent.last_seen_at):%Y-%m-%d %H:%M:%S}); this one does "
            f"nothing and exits. If that agent is gone, its claim lapses at "
            f"{timezone.localtime(agent.lease_expires_at):%H:%M:%S}.",
            code="host_taken",
        )
    if not host.served_by_agent:
        Host.objects.filter(pk=host.pk).update(served_by_agent=True)
        host.served_by_agent = True
    return agent


def agent_heartbeat(*, host: Host, holder: str, facts: AgentFacts, now: datetime) -> bool:
    """Renews the holder's lease and stores what it reports. Returns False when another
    agent holds the host now (this one stalled past its lease): it must stop."""
    with transaction.atomic():
        beat = HostAgent.objects.filter(host=host, holder=holder).update(
            lease_expires_at=now + lease_length(),
            last_seen_at=now,
            version=facts.version,
            engine_version=facts.engine_version,
            nvml_driver=facts.nvml_driver,
            cuda_driver_version=facts.cuda_driver_version,
            disk_free_gb=facts.disk_free_gb,
        )
        if not beat:
            return False
        back = HostAgent.objects.filter(host=host, silent_since__isnull=False).update(silent_since=None)
        if back:
            message = f"The agent of {host.name} answers again; its containers are looked after"
            event_record(event=Event(AGENT_BACK, message), host=host, now=now)
    return True


def agent_release(*, host: Host, holder: str) -> None:
    """An agent that stops cleanly lets the host go at once (a restart need not wait for
    the lease to lapse); its last heartbeat stays, so the host shows stale, then offline."""
    HostAgent.objects.filter(host=host, holder=holder).update(holder="", lease_expires_at=None)


def agent_silence_check(*, now: datetime) -> list[ContainerEvent]:
    """Central, every minute: one ERROR line for each agent that went silent."""
    events = []
    for agent in agents_gone_silent(now=now):
        if not HostAgent.objects.filter(pk=agent.pk, silent_since__isnull=True).update(silent_since=now):
            continue  # another check reported it meanwhile
        seen = timezone.localtime(agent.last_seen_at)
        message = (
            f"The agent of {agent.host.name} has not answered since {seen:%Y-%m-%d %H:%M}; "
            "its containers are not started or stopped until it is back"
        )
        events.append(event_record(event=Event(AGENT_SILENT, message), host=agent.host, now=now))
    return events
