"""Two GPU servers on one machine: two real Docker engines (the second one started by
deploy/test-engine/setup.sh with its own socket, roots and bridge), two Host rows, one
agent process each, one database. Each host's bookings start on its own engine only, with
folders under its own roots; each agent reads only its own server's GPUs (a fake NVML per
agent process); a stopped agent leaves the other host working and shows stale; an agent
killed in the middle of a tick and started again converges."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from django_q.models import Task

from aivc_portal.scheduler import queue_host_task
from bookings.models import Reservation
from containers.inventory_selectors import Health, host_health
from containers.models import ContainerEvent, Gpu, Host, HostAgent
from containers.specs import LABEL_HOST_ID, LABEL_MANAGED, LABEL_RESERVATION
from containers.telemetry.models import GpuSample
from tests.containers.agents import (
    WAIT_S,
    agent_environment,
    agent_processes,
    book_now,
    claimed,
    output,
    wait_for,
)
from tests.containers.conftest import TEST_IMAGE
from tests.containers.helpers import SETUP_ENGINES, destructive_engine_test
from tests.containers.nvml_file_probe import FILE_VARIABLE, reads_of, write_nvml
from tests.factories import host_with_roots

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
# Where deploy/test-engine/setup.sh starts the second engine.
ENGINE2_URL = os.environ.get("AIVC_TEST_ENGINE2", "unix:///run/aivc-test-engine2/docker.sock")
Status = Reservation.Status


@pytest.fixture(scope="session")
def engine2_client():
    """The second engine. Without it the test skips, unless AIVC_REQUIRE_DOCKER=1 (CI),
    where a missing second engine fails the test, as a missing first one does."""
    try:
        import docker

        client = docker.DockerClient(base_url=ENGINE2_URL, timeout=10)
        client.ping()
        client.images.get(TEST_IMAGE)
        return client
    except Exception as error:
        message = (
            f"The second Docker engine ({ENGINE2_URL}, AIVC_TEST_ENGINE2) does not answer or lacks "
            f"{TEST_IMAGE} ({error}); run deploy/test-engine/setup.sh as root."
        )
    if os.environ.get("AIVC_REQUIRE_DOCKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def engines(docker_client, engine2_client, docker_scope):
    """Both engines, and this test's containers and network removed from the second one
    afterwards (docker_scope does the first)."""
    yield docker_client, engine2_client
    for container in engine2_client.containers.list(
        all=True, filters={"label": f"{LABEL_MANAGED}={docker_scope}"}
    ):
        container.remove(force=True)
    network = django_settings.CONTAINER_NETWORK
    for found in engine2_client.networks.list(names=[network]):
        if found.name == network:
            found.remove()


@pytest.fixture
def agents(engines, settings, tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts agents whose GPUs are a fake NVML each (`start(host, AIVC_FAKE_NVML=path)`);
    every process it started is stopped afterwards, before the engines are cleaned."""
    environment = agent_environment(settings, GPU_PROBE="tests.containers.nvml_file_probe.JsonFileProbe")
    with agent_processes(environment, tmp_path) as start:
        yield start


def server(tmp_path: Path, name: str, *, docker_url: str, **fields) -> Host:
    """A GPU server with folder roots of its own; its GPUs come from its NVML."""
    return host_with_roots(tmp_path / name, name=name, docker_url=docker_url, **fields)


def holder_pid(host: Host) -> int | None:
    """The process id in the holder of the host's claim (`machine:pid:token`)."""
    holder = HostAgent.objects.filter(host=host).values_list("holder", flat=True).first()
    return int(holder.split(":")[1]) if holder else None


def containers_by_reservation(client, scope: str) -> dict[int, list]:
    found: dict[int, list] = {}
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}={scope}"}):
        found.setdefault(int(container.labels[LABEL_RESERVATION]), []).append(container)
    return found


def statuses(ids) -> dict[int, str]:
    return dict(Reservation.objects.filter(pk__in=ids).values_list("pk", "status"))


def nvml_gpus(server_tag: str, utilisation: tuple[int, int], processes: dict[int, list[int]] | None = None):
    processes = processes or {}
    return [
        {
            "index": index,
            "uuid": f"GPU-{server_tag}{index}000000-0000-0000-0000-000000000000",
            "memory_used_mb": 100 * (index + 1),
            "utilisation_percent": utilisation[index],
            "processes": [{"pid": pid, "used_memory_mb": 512} for pid in processes.get(index, [])],
        }
        for index in range(2)
    ]


def test_each_host_starts_its_bookings_on_its_own_engine_and_samples_only_its_own_gpus(
    tmp_path, agents, engines, test_image, default_profile, docker_scope
):
    engine1, engine2 = engines
    tag = uuid.uuid4().hex[:6]
    host_a = server(tmp_path, f"two-a-{tag}", docker_url="")
    host_b = server(tmp_path, f"two-b-{tag}", docker_url=ENGINE2_URL)
    nvml_a, nvml_b = tmp_path / "nvml-a.json", tmp_path / "nvml-b.json"
    write_nvml(nvml_a, gpus=nvml_gpus("a", (11, 12)), driver_version="550.1-a")
    write_nvml(nvml_b, gpus=nvml_gpus("b", (21, 22)), driver_version="550.1-b")
    agent_a = agents(host_a.name, **{FILE_VARIABLE: str(nvml_a)})
    agent_b = agents(host_b.name, **{FILE_VARIABLE: str(nvml_b)})
    wait_for(lambda: claimed(host_a) and claimed(host_b), what="both agents to claim their hosts")

    # The GPU inventory, by UUID, each server's from its own NVML, synced by its own agent.
    for host in (host_a, host_b):
        queue_host_task("containers.tasks.sync_gpu_inventory", host=Host.objects.get(pk=host.pk))

    def uuids(host: Host) -> set[str]:
        return set(Gpu.objects.filter(host=host).values_list("uuid", flat=True))

    wait_for(lambda: len(uuids(host_a)) == len(uuids(host_b)) == 2, what="both inventories")
    assert all(uuid_.startswith("GPU-a") for uuid_ in uuids(host_a))
    assert all(uuid_.startswith("GPU-b") for uuid_ in uuids(host_b))

    on_a = book_now(host=host_a, username=f"ua{tag}", image=test_image, gpu_count=1)
    on_b = book_now(host=host_b, username=f"ub{tag}", image=test_image, gpu_count=1)
    wait_for(
        lambda: set(statuses([on_a.pk, on_b.pk]).values()) == {Status.RUNNING},
        what=lambda: (
            f"both containers to run: {statuses([on_a.pk, on_b.pk])}\n{output(agent_a)}\n{output(agent_b)}"
        ),
    )

    # Each booking runs on its own host's engine, and only there.
    on_engine1 = containers_by_reservation(engine1, docker_scope)
    on_engine2 = containers_by_reservation(engine2, docker_scope)
    assert set(on_engine1) == {on_a.pk}
    assert set(on_engine2) == {on_b.pk}
    assert on_engine1[on_a.pk][0].labels[LABEL_HOST_ID] == str(host_a.pk)
    assert on_engine2[on_b.pk][0].labels[LABEL_HOST_ID] == str(host_b.pk)
    # ...with its folders under that host's roots, made by that host's agent.
    assert (Path(host_a.work_root) / f"ua{tag}").is_dir()
    assert (Path(host_b.work_root) / f"ub{tag}").is_dir()
    assert not (Path(host_a.work_root) / f"ub{tag}").exists()
    assert not (Path(host_b.work_root) / f"ua{tag}").exists()

    # NVML names host pids. On B, the student's process (the container's own) uses the GPU
    # they booked and also the one they did not; on A, only the booked one.
    on_a.refresh_from_db()
    on_b.refresh_from_db()
    pid_a = engine1.containers.get(on_a.container_id).attrs["State"]["Pid"]
    pid_b = engine2.containers.get(on_b.container_id).attrs["State"]["Pid"]
    (held_a,), (held_b,) = on_a.gpu_indices(), on_b.gpu_indices()
    write_nvml(nvml_a, gpus=nvml_gpus("a", (11, 12), {held_a: [pid_a]}), driver_version="550.1-a")
    write_nvml(nvml_b, gpus=nvml_gpus("b", (21, 22), {0: [pid_b], 1: [pid_b]}), driver_version="550.1-b")
    for host in (host_a, host_b):
        queue_host_task("containers.tasks.sample_gpus", host=Host.objects.get(pk=host.pk))
    # django-q files a task's result a moment after it ends: then its checks are done too.
    wait_for(
        lambda: Task.objects.filter(func="containers.tasks.sample_gpus", success=True).count() == 2,
        what="both agents' GPU sampling",
    )

    def samples(host: Host) -> set[tuple[str, int]]:
        rows = GpuSample.objects.filter(gpu__host=host).values_list("gpu__uuid", "utilisation_percent")
        return {(uuid_[:5], percent) for uuid_, percent in rows}

    assert samples(host_a) == {("GPU-a", 11), ("GPU-a", 12)}
    assert samples(host_b) == {("GPU-b", 21), ("GPU-b", 22)}
    # The duplicate-use check ran on B, found B's container by the pid's cgroup, and warned
    # about the GPU B's student did not book; nothing on A.
    warnings = ContainerEvent.objects.filter(sign="GPUDuplicateWarning")
    assert [event.host_id for event in warnings] == [host_b.pk]
    (warning,) = warnings
    unbooked = Gpu.objects.get(host=host_b, index=1 - held_b)
    assert f"{host_b.name} GPU {unbooked.index} ({unbooked.uuid}) runs process {pid_b}" in warning.message
    assert f"reservation #{on_b.pk} (ub{tag})" in warning.message
    # Each agent read its own server's NVML and nobody else's.
    assert {host for host, _ in reads_of(nvml_a)} == {host_a.name}
    assert {host for host, _ in reads_of(nvml_b)} == {host_b.name}
    sampled = set(Task.objects.filter(func="containers.tasks.sample_gpus").values_list("cluster", flat=True))
    assert sampled == {f"aivc-{host_a.name}", f"aivc-{host_b.name}"}
    assert dict(HostAgent.objects.values_list("host__name", "nvml_driver")) == {
        host_a.name: "550.1-a",
        host_b.name: "550.1-b",
    }

    # Stopping A's agent leaves B working, and A shows stale.
    agent_a.send_signal(signal.SIGTERM)
    assert agent_a.wait(timeout=WAIT_S) == 0
    later_on_b = book_now(host=host_b, username=f"uc{tag}", image=test_image)
    wait_for(
        lambda: statuses([later_on_b.pk]) == {later_on_b.pk: Status.RUNNING},
        what=lambda: f"the booking on B to run after A stopped\n{output(agent_b)}",
    )
    assert set(containers_by_reservation(engine2, docker_scope)) == {on_b.pk, later_on_b.pk}
    wait_for(
        lambda: host_health(host=Host.objects.get(pk=host_a.pk), now=timezone.now()) == Health.STALE,
        what="the stopped agent's host to show stale",
        timeout_s=10,
    )
    assert host_health(host=Host.objects.get(pk=host_b.pk), now=timezone.now()) == Health.ONLINE
    # A's container is left running as it was: only its agent may touch it.
    assert set(containers_by_reservation(engine1, docker_scope)) == {on_a.pk}


def test_an_agent_killed_in_the_middle_of_a_tick_converges_when_started_again(
    tmp_path, agents, engines, test_image, default_profile, docker_scope
):
    engine1, engine2 = engines
    tag = uuid.uuid4().hex[:6]
    host = server(tmp_path, f"two-k-{tag}", docker_url=ENGINE2_URL, served_by_agent=True)
    nvml = tmp_path / "nvml-k.json"
    write_nvml(nvml, gpus=[])
    # A burst of bookings made while the agent is away: its first tick launches them all.
    burst = [book_now(host=host, username=f"uk{n}{tag}", image=test_image) for n in range(6)]
    ids = [reservation.pk for reservation in burst]

    # One launch at a time, so there is a moment when some containers exist and some not.
    first = agents(host.name, AGENT_LAUNCH_WORKERS="1", **{FILE_VARIABLE: str(nvml)})
    wait_for(
        lambda: 0 < len(containers_by_reservation(engine2, docker_scope)) < len(burst),
        what=lambda: f"the first launches of the burst\n{output(first)}",
        timeout_s=WAIT_S,
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    at_kill = statuses(ids)
    assert set(at_kill.values()) != {Status.RUNNING}, "the tick had finished"
    assert len(containers_by_reservation(engine2, docker_scope)) < len(burst), "the tick had finished"

    # Started again, as systemd does: it is refused until the dead agent's lease lapses.
    deadline = time.monotonic() + WAIT_S
    while True:
        again = agents(host.name, **{FILE_VARIABLE: str(nvml)})
        wait_for(
            lambda again=again: again.poll() is not None or holder_pid(host) == again.pid,
            what=lambda again=again: f"the agent to claim the host or exit\n{output(again)}",
        )
        if again.poll() is None:
            break
        assert "is already served by the agent" in output(again), output(again)
        assert time.monotonic() < deadline, "the dead agent's claim never lapsed"

    wait_for(
        lambda: set(statuses(ids).values()) == {Status.RUNNING},
        what=lambda: f"the whole burst to run: {statuses(ids)}\n{output(again)}",
    )
    # Exactly one container per booking, each the one its reservation records, all running,
    # on the host's own engine only.
    reservations = {r.pk: r for r in Reservation.objects.filter(pk__in=ids)}
    found = containers_by_reservation(engine2, docker_scope)
    assert sorted(found) == sorted(ids)
    for reservation_id, containers in found.items():
        assert len(containers) == 1
        assert containers[0].status == "running"
        assert containers[0].id == reservations[reservation_id].container_id
    assert containers_by_reservation(engine1, docker_scope) == {}
    assert not ContainerEvent.objects.filter(level="ERROR").exists()
    assert holder_pid(host) == again.pid
    assert host_health(host=Host.objects.get(pk=host.pk), now=timezone.now()) == Health.ONLINE


def _kill_from_pidfile(pidfile: Path) -> None:
    os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


@destructive_engine_test
def test_the_first_engine_still_starts_containers_after_the_second_comes_back_from_a_crash(
    engines, docker_scope
):
    """A session's end kills both engines without a clean stop; the next setup starts them
    again, and the second one's start used to delete the first one's docker0."""
    engine1, engine2 = engines
    engine2_exec = Path(os.environ.get("AIVC_TEST_ENGINE2_EXEC", "/run/aivc-test-engine2/exec"))
    engine2_root = Path(os.environ.get("AIVC_TEST_ENGINE2_ROOT", "/var/lib/aivc-test-engine2"))
    _kill_from_pidfile(engine2_root / "dockerd.pid")
    _kill_from_pidfile(engine2_exec / "containerd" / "containerd.pid")
    wait_for(lambda: not _answers(engine2), what="the second engine to stop answering")

    subprocess.run([SETUP_ENGINES], check=True, capture_output=True)

    labels = {LABEL_MANAGED: docker_scope}
    for client in (engine1, engine2):
        client.containers.run(TEST_IMAGE, "true", network="bridge", labels=labels, remove=True)


def _answers(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
