"""Many starts at once, and several hosts (issue 11). Run with `make bench`; writes
docs/benchmarks/multihost.md.

- 100 reservations starting in the same minute on one host: a real agent (`AIVC_HOST=...
  manage.py qcluster`) and the real Docker engine; latency = the engine's own `start`
  event minus the reservation's start.
- One reconcile tick with 500 live reservations over 4 hosts: fake runtime, real
  PostgreSQL; the launching tick and a steady tick.
- Booking to running, 40 bookings made at once over two hosts: two agents (one per host)
  against one scheduler serving both hosts."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import reservation_create
from containers import lifecycle
from containers.fake_runtime import FakeRuntime
from containers.models import ContainerEvent
from containers.specs import LABEL_MANAGED
from tests.bench.conftest import machine, percentile
from tests.containers.test_runtime_docker import _url_of_the_test_database
from tests.factories import HostFactory, ImageFactory, ReservationFactory, UserFactory

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "docs" / "benchmarks" / "multihost.md"
RESULTS: dict[str, str] = {}
# Ports of our own, away from the range other test runs on this engine use.
BENCH_PORTS = range(32000, 33000)


def make_host(tmp_path: Path, name: str, **fields):
    roots = {key: tmp_path / name / key for key in ("work", "backup", "dataset")}
    for path in roots.values():
        path.mkdir(parents=True)
    return HostFactory(
        name=name,
        work_root=str(roots["work"]),
        backup_root=str(roots["backup"]),
        dataset_root=str(roots["dataset"]),
        **fields,
    )


class EngineEvents:
    """The engine's own `start` times of the containers under a label scope."""

    def __init__(self, client, scope: str) -> None:
        self.starts: dict[str, datetime] = {}
        self._stream = client.events(
            decode=True, filters={"type": "container", "label": f"{LABEL_MANAGED}={scope}"}
        )
        threading.Thread(target=self._record, daemon=True).start()

    def _record(self) -> None:
        for event in self._stream:
            if event.get("Action") == "start":
                name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
                self.starts.setdefault(name, datetime.fromtimestamp(event["timeNano"] / 1e9, tz=UTC))

    def wait_for(self, names: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not names <= set(self.starts):
            time.sleep(0.2)


class Schedulers:
    """qcluster processes started by the benchmark, and only those, stopped at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.processes = tmp_path, []
        self.environment = {
            **os.environ,
            "DATABASE_URL": _url_of_the_test_database(),
            "CONTAINER_RUNTIME": "containers.runtime.DockerRuntime",
            "CONTAINER_SCOPE": django_settings.CONTAINER_SCOPE,
            "CONTAINER_NETWORK": django_settings.CONTAINER_NETWORK,
            "CONTAINER_PREFIX": django_settings.CONTAINER_PREFIX,
            "SECRET_KEY": django_settings.SECRET_KEY,
            "DEBUG": "0",
            "AGENT_LAUNCH_WORKERS": str(django_settings.AGENT_LAUNCH_WORKERS),
        }

    def start(self, host_name: str = "") -> None:
        log = open(self.tmp_path / f"qcluster-{host_name or 'central'}.log", "w")  # noqa: SIM115
        environment = {**self.environment, "AIVC_HOST": host_name}
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=REPO, env=environment, stdout=log, stderr=log
        )
        self.processes.append((process, log))

    def stop(self) -> None:
        for process, _ in self.processes:
            process.send_signal(signal.SIGTERM)
        for process, log in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        self.processes = []


class EngineCpu:
    """CPU seconds the local Docker engine (dockerd with the children it reaped: iptables,
    ...) and the whole machine spent between `start` and `stop`; zeros where /proc or the
    engine's pid file cannot be read."""

    PID_FILE = Path("/var/run/docker.pid")

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.engine_s = self.machine_busy_s = self.wall_s = 0.0

    def _read(self) -> tuple[float, float, float]:
        engine = 0.0
        try:
            fields = (
                Path(f"/proc/{int(self.PID_FILE.read_text())}/stat").read_text().rsplit(")", 1)[1].split()
            )
            engine = sum(int(value) for value in fields[11:15]) / self.tick  # utime stime cutime cstime
        except (OSError, ValueError):
            pass
        try:
            values = [int(v) / self.tick for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
            busy = sum(values) - values[3] - values[4]  # all but idle and iowait
        except (OSError, ValueError, IndexError):
            busy = 0.0
        return engine, busy, time.monotonic()

    def start(self) -> None:
        self._began = self._read()

    def stop(self) -> None:
        ended = self._read()
        self.engine_s, self.machine_busy_s, self.wall_s = (
            b - a for a, b in zip(self._began, ended, strict=True)
        )


def bench_user(number: int, tag: str):
    return UserFactory(username=f"b{tag}{number:03d}", forward_port=BENCH_PORTS.start + number)


def line(label: str, values: list[float]) -> str:
    return (
        f"| {label} | {len(values)} | {percentile(values, 0.5):.2f} | {percentile(values, 0.95):.2f} "
        f"| {max(values):.2f} |"
    )


def why_not_started(reservations: list) -> str:
    """What the agent stored about the reservations it did not start: their statuses and
    messages, and the last events, so a failing run says why without a rerun."""
    rows = Reservation.objects.filter(pk__in=[r.pk for r in reservations])
    statuses = Counter((r.status, r.status_message[:200]) for r in rows)
    lines = [f"{n} x {status}: {message}" for (status, message), n in statuses.most_common(5)]
    recent = ContainerEvent.objects.order_by("-created_at")[:10]
    return "\n".join([*lines, "last events:", *(f"  {e.sign}: {e.message[:300]}" for e in recent)])


# The page's hand-written part (figures of tests/bench/engine_probe.py and what they mean)
# starts at this heading; a run keeps it as it is.
KEPT_HEADING = "## Where a start's time goes"


def write_figures() -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    page = FIGURES.read_text() if FIGURES.exists() else ""
    kept = page[page.index(KEPT_HEADING) :] if KEPT_HEADING in page else ""
    parts = [
        "# Several hosts and many starts at once",
        "",
        f"Measured {timezone.now():%Y-%m-%d %H:%M} UTC by `tests/bench/test_multihost_bench.py` "
        f"(`make bench`) on {machine()}, PostgreSQL 15 on 127.0.0.1, the busybox test image. "
        "Each section says what was measured.",
        "",
        *[RESULTS[key] for key in ("burst", "tick", "agents") if key in RESULTS],
    ]
    FIGURES.write_text("\n".join(parts) + "\n" + (f"\n{kept}" if kept else ""))


@pytest.mark.docker
@pytest.mark.parametrize("workers", [1, 8])
def test_100_reservations_starting_in_the_same_minute_on_one_host(
    workers, tmp_path, settings, docker_client, docker_scope, test_image, default_profile
):
    settings.PORT_RANGE = BENCH_PORTS
    count, lead = 100, timedelta(seconds=90)
    settings.AGENT_LAUNCH_WORKERS = workers
    host = make_host(tmp_path, f"burst-{uuid.uuid4().hex[:6]}", cpus=400, ram_gb=400, swap_gb=0)
    start = timezone.now() + lead
    reservations = [
        ReservationFactory(
            user=bench_user(n, "s"),
            host=host,
            image=test_image,
            cpus=Decimal("0.1"),
            memory_gb=1,
            start=start,
            end=start + timedelta(minutes=10),
        )
        for n in range(count)
    ]
    events = EngineEvents(docker_client, docker_scope)
    agents = Schedulers(tmp_path)
    agents.start(host.name)
    cpu = EngineCpu()
    try:
        names = {f"{django_settings.CONTAINER_PREFIX}{r.user.username}" for r in reservations}
        time.sleep(max(0.0, (start - timezone.now()).total_seconds()))
        cpu.start()
        events.wait_for(names, timeout_s=120)
        cpu.stop()
    finally:
        agents.stop()
    latencies = [(events.starts[name] - start).total_seconds() for name in names if name in events.starts]
    assert len(latencies) == count, (
        f"{count - len(latencies)} never started; see {tmp_path}\n{why_not_started(reservations)}"
    )
    header = [
        f"## {count} reservations starting at the same instant on one host",
        "",
        "One agent (`AIVC_HOST`, a real `manage.py qcluster`, 4 django-q workers) and the real "
        "Docker engine, launching on AGENT_LAUNCH_WORKERS threads (1: one after another, as "
        "before). The agent starts about 90 s before the start: its ticks make the users' "
        "folders and SSH host keys ahead; the waker then fires at the start. Latency: the "
        "engine's `start` event minus the reservation's start. From the start instant until "
        "the last container started: dockerd's CPU seconds (with the children it reaped, e.g. "
        "iptables) per start, and how busy the whole machine was (other engineers' work "
        "included).",
        "",
        "| AGENT_LAUNCH_WORKERS | n | p50 (s) | p95 (s) | max (s) | dockerd CPU s per start "
        "| machine busy | load average |",
        "|---|---|---|---|---|---|---|---|",
    ]
    footer = (
        "\n\nTarget: max <= 10 s. Before (issue 11, measured from outside on main): launches one "
        "after another, ~0.36 s each, so the 100th container started ~40 s late.\n"
    )
    rows = RESULTS.get("burst", "\n".join(header)).replace(footer, "")
    busy = cpu.machine_busy_s / cpu.wall_s / (os.cpu_count() or 1) if cpu.wall_s else 0.0
    figures = f" {cpu.engine_s / count:.3f} | {busy:.0%} | {os.getloadavg()[0]:.1f} |"
    RESULTS["burst"] = f"{rows}\n{line(str(workers), latencies)}{figures}{footer}"
    write_figures()
    if workers > 1:
        assert max(latencies) <= 10


@pytest.mark.parametrize("workers", [1, 8])
def test_one_reconcile_tick_with_500_live_reservations_over_4_hosts(
    workers, tmp_path, settings, default_profile
):
    settings.CONTAINER_RUNTIME = "containers.fake_runtime.FakeRuntime"
    settings.AGENT_LAUNCH_WORKERS = workers
    settings.AIVC_HOST = ""
    FakeRuntime.reset()
    image = ImageFactory(reference="lab/aivc-server:latest")
    hosts = [make_host(tmp_path, f"tick-{n}", cpus=500, ram_gb=1000, swap_gb=0) for n in range(4)]
    now = timezone.now()
    for n in range(500):
        ReservationFactory(
            user=bench_user(n, "t"),
            host=hosts[n % 4],
            image=image,
            cpus=Decimal("1"),
            memory_gb=1,
            start=now + timedelta(minutes=5),
            end=now + timedelta(hours=2),
        )
    # What the ticks before the start do: folders and host keys made ahead.
    began = time.monotonic()
    lifecycle.reconcile(wake=False)
    prepare_s = time.monotonic() - began
    Reservation.objects.update(start=timezone.now() - timedelta(seconds=1))

    timings = {}
    for label in ("launching tick (500 starts)", "steady tick (500 running)"):
        with CaptureQueriesContext(connection) as queries:
            began = time.monotonic()
            report = lifecycle.reconcile(wake=False)
            timings[label] = (time.monotonic() - began, len(queries), report)
    FakeRuntime.reset()

    launching = timings["launching tick (500 starts)"]
    assert len(launching[2].started) == 500
    assert Reservation.objects.filter(status=Reservation.Status.RUNNING).count() == 500
    rows = [
        f"| {workers} | {label} | {seconds:.2f} | {queries} | {os.getloadavg()[0]:.1f} |"
        for label, (seconds, queries, _) in timings.items()
    ]
    rows.append(
        f"| {workers} | ticks before the start: folders and host keys of 500 users | {prepare_s:.2f} | "
        f"| {os.getloadavg()[0]:.1f} |"
    )
    previous = RESULTS.get("tick", "")
    RESULTS["tick"] = (
        previous.replace("\n\nTarget: <= 2 s", "\n" + "\n".join(rows) + "\n\nTarget: <= 2 s")
        if previous
        else "\n".join(
            [
                "## One reconcile tick, 500 live reservations over 4 hosts",
                "",
                "The fake runtime (no engine) and real PostgreSQL; one process reconciling the 4 "
                "hosts, each host's launches on a pool of AGENT_LAUNCH_WORKERS threads. Queries: "
                "those of the tick's own thread; a launch that goes well asks the database nothing "
                "from the pool's threads (the space verdicts, the moves to starting and running "
                "and the events are written per host, in batches).",
                "",
                "| AGENT_LAUNCH_WORKERS | tick | seconds | queries (main thread) | load average |",
                "|---|---|---|---|---|",
                *rows,
                "",
                "Target: <= 2 s. Before (issue 11): a tick that launched 500 took 11.0 s (2,027 "
                "queries, half of it in ssh-keygen for first-time users); a steady tick 0.09 s.",
                "",
            ]
        )
    )
    write_figures()
    if workers > 1:
        assert launching[0] <= 2


@pytest.mark.docker
@pytest.mark.parametrize("agents", ["one scheduler for both hosts", "one agent per host"])
def test_booking_to_running_with_two_agents_against_one(
    agents, tmp_path, settings, docker_client, docker_scope, test_image, default_profile
):
    settings.PORT_RANGE = BENCH_PORTS
    count = 40
    tag = uuid.uuid4().hex[:4]
    hosts = [make_host(tmp_path, f"h{n}-{tag}", cpus=100, ram_gb=100, swap_gb=0) for n in range(2)]
    users = [bench_user(n, tag) for n in range(count)]
    events = EngineEvents(docker_client, docker_scope)
    schedulers = Schedulers(tmp_path)
    booked = {}
    try:
        if agents == "one agent per host":
            for host in hosts:
                schedulers.start(host.name)
            for host in hosts:
                while not host.__class__.objects.get(pk=host.pk).served_by_agent:
                    time.sleep(0.2)
        else:
            schedulers.start()
        time.sleep(8)  # the clusters come up
        for number, user in enumerate(users):
            reservation_create(
                user=user,
                host=hosts[number % 2],
                start="now",
                end="1-day",
                cpus=1,
                memory_gb=1,
                gpu_count=0,
                image=test_image,
            )
            booked[f"{django_settings.CONTAINER_PREFIX}{user.username}"] = timezone.now()
        events.wait_for(set(booked), timeout_s=120)
    finally:
        schedulers.stop()
    latencies = [
        (events.starts[name] - at).total_seconds() for name, at in booked.items() if name in events.starts
    ]
    assert len(latencies) == count
    header = [
        "## Booking to running, 40 bookings at once over two hosts",
        "",
        "`reservation_create(start='now')` 40 times in a row, alternating between two hosts on "
        "the same engine; latency: the engine's `start` event minus the moment the booking "
        "committed. One scheduler without AIVC_HOST serving both hosts, against one agent per "
        "host (two real `qcluster` processes).",
        "",
        "| | n | p50 (s) | p95 (s) | max (s) | load average |",
        "|---|---|---|---|---|---|",
    ]
    previous = RESULTS.get("agents", "\n".join(header)).split("\n")
    RESULTS["agents"] = "\n".join([*previous, f"{line(agents, latencies)} {os.getloadavg()[0]:.1f} |"])
    write_figures()
