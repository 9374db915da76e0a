"""The agent of one GPU server: `AIVC_HOST=<host> manage.py qcluster`. It claims its host
(one agent per host), then runs the django-q cluster named after the host and writes a
heartbeat, with what it sees of its server, every AGENT_HEARTBEAT_SECONDS."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import tomllib
import uuid
from collections.abc import Callable
from functools import cache

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from containers.agent_services import AgentFacts, agent_heartbeat
from containers.models import Host
from containers.runtime import RuntimeProblem, get_runtime

logger = logging.getLogger(__name__)
GIB = 1024**3
TICK_S = 0.5


def holder_id() -> str:
    """Who claims a host: this machine and process, plus a token so a restarted process
    that got the same pid is still another holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@cache
def portal_version() -> str:
    try:
        with open(settings.BASE_DIR / "pyproject.toml", "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return ""


def _free_gb(path: str) -> float | None:
    try:
        return round(shutil.disk_usage(path).free / GIB, 1)
    except OSError:
        return None


def read_facts(host: Host) -> AgentFacts:
    """What the heartbeat reports; anything unreadable is reported as such, never raised."""
    try:
        engine = get_runtime(host).engine_version()
    except RuntimeProblem as error:
        logger.warning("Heartbeat: the engine of %s does not answer (%s).", host.name, error)
        engine = "unreachable"
    from containers import gpus

    reading = gpus.probe()
    return AgentFacts(
        version=portal_version(),
        engine_version=engine,
        nvml_driver=reading.driver_version if reading.available else "",
        cuda_driver_version=reading.cuda_driver_version if reading.available else "",
        disk_free_gb={root: _free_gb(root) for root in (host.work_root, host.backup_root, host.dataset_root)},
    )


def beat(*, host: Host, holder: str) -> bool:
    """One heartbeat. A database that does not answer is logged and tried again next time
    (the lease outlives a few missed beats); returns False only when the host was lost."""
    close_old_connections()
    try:
        return agent_heartbeat(host=host, holder=holder, facts=read_facts(host), now=timezone.now())
    except Exception:
        logger.exception("Heartbeat for %s failed; trying again.", host.name)
        connections.close_all()
        return True


def keep_beating(*, host: Host, holder: str, alive: Callable[[], bool]) -> bool:
    """Beats every AGENT_HEARTBEAT_SECONDS while `alive()`. Returns False if the host was
    lost to another agent (the caller stops the cluster), True when `alive()` turned False."""
    next_beat = time.monotonic() + settings.AGENT_HEARTBEAT_SECONDS
    while alive():
        if time.monotonic() >= next_beat:
            if not beat(host=host, holder=holder):
                return False
            next_beat = time.monotonic() + settings.AGENT_HEARTBEAT_SECONDS
        time.sleep(TICK_S)
    return True
