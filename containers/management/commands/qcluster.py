"""django-q's `qcluster`, which becomes a GPU server's agent when AIVC_HOST names a host."""

import signal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import connections
from django.utils import timezone
from django_q.cluster import Cluster
from django_q.management.commands import qcluster

from aivc_portal.scheduler import queue_task
from aivc_portal.task_names import RECONCILE_TASK
from containers.agent import beat, holder_id, keep_beating
from containers.agent_services import agent_claim, agent_release
from containers.models import Host
from containers.schedules import schedules_ensure_for_host


class Command(qcluster.Command):
    help = (
        "Starts the scheduler. With AIVC_HOST=<host name> it is that GPU server's agent: it "
        "serves only that host, from the cluster named after it, and writes a heartbeat."
    )

    def handle(self, *args, **options) -> None:
        if not settings.AIVC_HOST:
            return super().handle(*args, **options)
        # Until the cluster takes over SIGTERM, a stop request still lets the host go.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        host = self._own_host()
        holder = holder_id()
        try:
            agent_claim(host=host, holder=holder, now=timezone.now())
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        try:
            schedules_ensure_for_host(host=host)
            beat(host=host, holder=holder)
            # The first tick at once, not at the scheduler's next round.
            queue_task(RECONCILE_TASK)
            self.stdout.write(f"Agent of {host.name} ({holder}) starts its cluster.")
            self._serve(host=host, holder=holder, run_once=options.get("run_once", False))
        finally:
            agent_release(host=host, holder=holder)
        return None

    def _own_host(self) -> Host:
        host = Host.objects.filter(name=settings.AIVC_HOST).first()
        if host is None:
            known = ", ".join(Host.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(
                f"AIVC_HOST={settings.AIVC_HOST!r} names no host (hosts: {known}). Run "
                f"`manage.py bootstrap_host --name {settings.AIVC_HOST}` on that server, or add "
                "the host in admin, then start the agent again."
            )
        return host

    def _serve(self, *, host: Host, holder: str, run_once: bool) -> None:
        # The cluster forks its processes: none may inherit this process's connection.
        connections.close_all()
        cluster = Cluster()
        if _start_holding_stop_signals(cluster) or run_once:
            cluster.stop()
            return
        if not keep_beating(host=host, holder=holder, alive=cluster.sentinel.is_alive):
            cluster.stop()
            raise CommandError(f"Another agent took over {host.name}; this one stopped.")


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _start_holding_stop_signals(cluster: Cluster) -> bool:
    """Starts the cluster; whether SIGTERM or SIGINT came meanwhile. django-q's own handler
    drops a signal that lands while its sentinel process is being started (`Cluster.stop`
    sees a process that is not alive yet and does nothing), which left an agent running
    after systemd asked it to stop; such a signal is held here and acted on afterwards."""
    held: list[int] = []
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    previous = {
        signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in stop_signals
    }
    try:
        cluster.start()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return bool(held)
