"""Two agents as two real `manage.py qcluster` processes, one per host, against one
PostgreSQL database and the real Docker engine: each host's work is done by its own agent
only, a second agent for a host refuses, an agent for an unknown host exits, and a stopped
agent leaves the other host working and shows stale."""

import signal
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_q.models import Task

from bookings.models import Reservation
from containers.inventory_selectors import Health, host_health
from containers.models import Host, HostAgent
from containers.specs import LABEL_HOST, LABEL_MANAGED, LABEL_RESERVATION
from tests.containers.agents import (
    WAIT_S,
    agent_environment,
    agent_processes,
    book_now,
    claimed,
    output,
    wait_for,
)
from tests.factories import host_with_roots

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
Status = Reservation.Status


@pytest.fixture
def start_agent(docker_scope, settings, tmp_path) -> Iterator[Callable[..., object]]:
    with agent_processes(agent_environment(settings), tmp_path) as start:
        yield start


def make_host(tmp_path: Path, name: str) -> Host:
    return host_with_roots(tmp_path / name, name=name, gpus=0)


def test_each_agent_starts_only_its_own_hosts_bookings(
    tmp_path, start_agent, test_image, default_profile, docker_client, docker_scope
):
    tag = uuid.uuid4().hex[:6]
    host_a, host_b = make_host(tmp_path, f"agent-a-{tag}"), make_host(tmp_path, f"agent-b-{tag}")
    agent_a, agent_b = start_agent(host_a.name), start_agent(host_b.name)
    wait_for(lambda: claimed(host_a) and claimed(host_b), what="both agents to claim their hosts")

    on_a = book_now(host=host_a, username=f"ua{tag}", image=test_image)
    on_b = book_now(host=host_b, username=f"ub{tag}", image=test_image)
    try:
        wait_for(
            lambda: Reservation.objects.filter(pk__in=[on_a.pk, on_b.pk], status=Status.RUNNING).count() == 2,
            what="both containers to run",
        )
    except AssertionError as error:
        from containers.models import ContainerEvent

        states = list(
            Reservation.objects.filter(pk__in=[on_a.pk, on_b.pk]).values_list(
                "pk", "status", "status_message"
            )
        )
        logged = list(ContainerEvent.objects.values_list("sign", "message"))
        tasks = list(Task.objects.values_list("func", "cluster", "success", "result"))
        raise AssertionError(
            f"{error}\n{states}\n{logged}\n{tasks}\n{output(agent_a)}\n{output(agent_b)}"
        ) from None

    containers = docker_client.containers.list(filters={"label": f"{LABEL_MANAGED}={docker_scope}"})
    hosts_by_reservation = {int(c.labels[LABEL_RESERVATION]): c.labels[LABEL_HOST] for c in containers}
    assert hosts_by_reservation == {on_a.pk: host_a.name, on_b.pk: host_b.name}
    # The folders were made on each reservation's own host, by its own agent.
    assert (Path(host_a.work_root) / f"ua{tag}").is_dir()
    assert not (Path(host_a.work_root) / f"ub{tag}").exists()
    assert (Path(host_b.work_root) / f"ub{tag}").is_dir()
    # Every reconcile ran in the cluster of the agent it was queued to (django-q files a
    # task's result a moment after it ends).
    expected = {f"aivc-{host_a.name}", f"aivc-{host_b.name}"}

    def clusters() -> set[str]:
        return set(Task.objects.filter(func="containers.tasks.reconcile").values_list("cluster", flat=True))

    wait_for(lambda: clusters() == expected, what="both agents' results", timeout_s=20)
    assert clusters() == expected


def test_a_second_agent_for_a_served_host_refuses_and_an_unknown_host_is_an_error(
    tmp_path, start_agent, test_image, default_profile
):
    host = make_host(tmp_path, f"agent-c-{uuid.uuid4().hex[:6]}")
    first = start_agent(host.name)
    wait_for(lambda: claimed(host), what="the first agent to claim the host")
    holder = HostAgent.objects.get(host=host).holder

    second = start_agent(host.name)
    unknown = start_agent("no-such-host")

    assert second.wait(timeout=WAIT_S) == 1
    assert f"Host {host.name} is already served by the agent {holder}" in output(second)
    assert unknown.wait(timeout=WAIT_S) == 1
    assert "AIVC_HOST='no-such-host' names no host" in output(unknown)
    assert first.poll() is None
    assert HostAgent.objects.get(host=host).holder == holder


def test_a_stopped_agent_shows_stale_while_the_other_host_keeps_working(
    tmp_path, start_agent, test_image, default_profile
):
    tag = uuid.uuid4().hex[:6]
    host_a, host_b = make_host(tmp_path, f"agent-d-{tag}"), make_host(tmp_path, f"agent-e-{tag}")
    agent_a, agent_b = start_agent(host_a.name), start_agent(host_b.name)
    wait_for(lambda: claimed(host_a) and claimed(host_b), what="both agents to claim their hosts")

    agent_b.send_signal(signal.SIGTERM)
    assert agent_b.wait(timeout=WAIT_S) == 0
    on_a = book_now(host=host_a, username=f"ud{tag}", image=test_image)
    wait_for(
        lambda: Reservation.objects.filter(pk=on_a.pk, status=Status.RUNNING).exists(),
        what=f"the booking on the working host to run\n{output(agent_a)}",
    )

    wait_for(
        lambda: host_health(host=Host.objects.get(pk=host_b.pk), now=timezone.now()) == Health.STALE,
        what="the stopped agent's host to show stale",
        timeout_s=10,
    )
    assert host_health(host=Host.objects.get(pk=host_a.pk), now=timezone.now()) == Health.ONLINE
    assert HostAgent.objects.get(host=host_a).last_seen_at > timezone.now() - timedelta(seconds=5)
