"""Reads of the inventory (layer 1): how each host's agent answers, and what the agents
found about images on a host. They read only `containers.models`, so the bookings layer
may ask them (docs/architecture.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.utils.translation import gettext_lazy as _

from containers.models import Host, HostAgent, Image, ImagePresence

# How long the agent's finding that an engine holds an image spares new bookings another
# check. An image removed meanwhile is still caught at the launch, which waits for a pull.
PRESENCE_TRUSTED_FOR = timedelta(hours=1)

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


def hosts_with_health(*, now: datetime, hosts: QuerySet[Host] | None = None) -> list[tuple[Host, Health]]:
    hosts = (hosts if hosts is not None else Host.objects.all()).select_related("agent")
    return [(host, host_health(host=host, now=now)) for host in hosts]


def with_known_presence(images: QuerySet[Image], *, host_id: int, now: datetime) -> QuerySet[Image]:
    """Each image with what the host's agent found within PRESENCE_TRUSTED_FOR:
    `known_present`, it is in the engine, so a booking need not queue another check;
    `missing_reason`, not None when it is absent and could not be pulled (the engine's
    words), so a container of it cannot start there; and `presence_state`, the agent's last
    finding whenever it was made (None: never checked on this host)."""
    found = ImagePresence.objects.filter(host_id=host_id, image=OuterRef("pk"))
    recent = found.filter(checked_at__gte=now - PRESENCE_TRUSTED_FOR)
    return images.annotate(
        known_present=Exists(recent.filter(state=ImagePresence.State.PRESENT)),
        missing_reason=Subquery(recent.filter(state=ImagePresence.State.FAILED).values("message")[:1]),
        presence_state=Subquery(found.values("state")[:1]),
    )
