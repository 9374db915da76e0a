"""Queues scheduler tasks by dotted name, so a lower layer can wake a higher one without
importing it, and routes each to the cluster that must run it: work on a GPU server goes
to that server's agent."""

from __future__ import annotations

import logging
from typing import Protocol

from django.conf import settings
from django.db import transaction

from aivc_portal.clusters import agent_cluster

logger = logging.getLogger(__name__)


class RoutedHost(Protocol):
    name: str
    served_by_agent: bool


def cluster_for(host: RoutedHost) -> str | None:
    """The cluster that does the host's local work: its agent's, or (None) the central
    scheduler's when the host has no agent of its own."""
    return agent_cluster(host.name) if host.served_by_agent else None


def _own_cluster() -> str | None:
    # Work an agent queues for itself (a waker, a user's disk audit) stays on its server.
    return agent_cluster(settings.AIVC_HOST) if settings.AIVC_HOST else None


def queue_task(dotted_name: str, *args, cluster: str | None = None, **kwargs) -> None:
    """Queues the task once the current transaction commits, to `cluster` (default: this
    process's own). A broker failure is logged and swallowed: the every-minute tick picks
    the work up anyway."""
    cluster = cluster or _own_cluster()

    def enqueue() -> None:
        from django_q.tasks import async_task

        try:
            async_task(dotted_name, *args, q_options={"cluster": cluster} if cluster else {}, **kwargs)
        except Exception:
            logger.exception("Could not queue %s; the next scheduled tick will do it.", dotted_name)

    transaction.on_commit(enqueue)


def queue_host_task(dotted_name: str, *args, host: RoutedHost, **kwargs) -> None:
    """Queues work that must run on the host's own machine to whoever serves that host."""
    queue_task(dotted_name, *args, cluster=cluster_for(host), **kwargs)
