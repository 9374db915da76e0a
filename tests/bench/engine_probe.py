"""Where a container start's time goes on the local Docker engine (issue 11): each API call
of a launch timed on its own, for N containers on a pool of threads, in the modes below,
with the CPU seconds dockerd (with the children it reaped), containerd and the whole
machine spent meanwhile. Not a test: run it by hand, under the benchmark lock,

    flock /tmp/aivc-bench.lock .venv/bin/python -m tests.bench.engine_probe

with N (default 100) and MODES (default full8,prep8,noportprep8) in the environment. A
mode is `full` (network check, create, start, inspect: what DockerRuntime.run does),
`prep` (created ahead, untimed; then only `start`), `noportprep` (as prep, without the
published SSH port) or `bridgeprep` (as prep, on Docker's default bridge instead of the
portal's isolated network), followed by the number of threads. Its containers carry a label scope
of their own and ports 34000 and up; all are removed at the end. Figures:
docs/benchmarks/multihost.md."""

import os
import queue
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aivc_portal.settings")

import django

django.setup()

import docker  # noqa: E402
from django.conf import settings  # noqa: E402

from containers.models import Host  # noqa: E402
from containers.runtime import DockerRuntime  # noqa: E402
from containers.specs import LABEL_MANAGED, ContainerSpec, Mount, scope_labels  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
ROOT = Path(tempfile.gettempdir()) / "aivc-engine-probe"
PORTS = 34000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / TICK  # utime stime cutime cstime


def cpu_now() -> dict[str, float]:
    engine_pid = int(Path("/var/run/docker.pid").read_text())
    containerd = subprocess.run(["pgrep", "-x", "containerd"], capture_output=True, text=True).stdout.split()
    values = [int(value) / TICK for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return {
        "dockerd": process_cpu_s(engine_pid),
        "containerd": sum(process_cpu_s(int(pid)) for pid in containerd),
        "machine busy": sum(values) - values[3] - values[4],
        "machine system": values[2],
    }


def on_pool(step, items, workers: int) -> tuple[list, float]:
    work: queue.SimpleQueue = queue.SimpleQueue()
    for item in items:
        work.put(item)
    results = []

    def worker() -> None:
        while True:
            try:
                item = work.get_nowait()
            except queue.Empty:
                return
            results.append(step(item))

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.monotonic() - began


class Probe:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        settings.CONTAINER_SCOPE = f"aivc-probe-{tag}"
        settings.CONTAINER_PREFIX = f"aivcp{tag}-"
        settings.CONTAINER_NETWORK = f"aivcp{tag}-net"
        self.tag = tag
        self.host = Host(pk=900000 + int(tag[:4], 16) % 1000, name=f"probe-{tag}", cpus=100, ram_gb=100)
        self.runtime = DockerRuntime(self.host)
        self.client = docker.from_env(timeout=120)

    def options(self, number: int, *, port: bool) -> dict:
        """What DockerRuntime.run passes to the engine, for a spec shaped like a booking's."""
        folder = ROOT / self.tag / str(number)
        for name in ("work", "backup", "dataset"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        spec = ContainerSpec(
            name=f"{settings.CONTAINER_PREFIX}u{number:03d}",
            image=os.environ.get("AIVC_TEST_IMAGE", "aivc-test/busybox:latest"),
            command=None,
            nano_cpus=10**8,
            memory_bytes=1 << 30,
            memory_swap_bytes=1 << 30,
            shm_bytes=0,
            gpu_ids=[],
            environment={"NVIDIA_VISIBLE_DEVICES": "none"},
            ssh_port=PORTS + number if port else None,
            mounts=[
                Mount(str(folder / "work"), "/root/Work"),
                Mount(str(folder / "backup"), "/root/Backup"),
                Mount(str(folder / "dataset"), "/root/Dataset", read_only=True),
            ],
            labels={**scope_labels(self.host), "aivc.reservation": str(number)},
        )
        return self.runtime.create_options(spec)

    def full(self, number: int) -> dict[str, float]:
        options = self.options(number, port=True)
        began = time.monotonic()
        options["network"] = self.runtime._ensure_network(settings.CONTAINER_NETWORK)
        networked = time.monotonic()
        container = self.client.containers.create(**options)
        created = time.monotonic()
        container.start()
        started = time.monotonic()
        container.reload()
        inspected = time.monotonic()
        return {
            "network": networked - began,
            "create": created - networked,
            "start": started - created,
            "inspect": inspected - started,
        }

    def create(self, number: int, *, port: bool, network: bool) -> str:
        options = self.options(number, port=port)
        if network:
            options["network"] = self.runtime._ensure_network(settings.CONTAINER_NETWORK)
        else:
            options.pop("network", None)  # Docker's default bridge
        return self.client.containers.create(**options).id

    def start(self, container_id: str) -> dict[str, float]:
        began = time.monotonic()
        self.client.api.start(container_id)
        return {"start": time.monotonic() - began}

    def clean(self) -> None:
        scope = {"label": f"{LABEL_MANAGED}={settings.CONTAINER_SCOPE}"}
        for container in self.client.containers.list(all=True, filters=scope):
            container.remove(force=True)

    def run(self, mode: str, count: int) -> None:
        workers = int("".join(ch for ch in mode if ch.isdigit()))
        kind = mode.rstrip("0123456789")
        if kind == "full":
            before = cpu_now()
            rows, wall = on_pool(self.full, range(count), workers)
        else:
            created, _ = on_pool(
                lambda n: self.create(n, port=kind != "noportprep", network=kind != "bridgeprep"),
                range(count),
                workers,
            )
            before = cpu_now()
            rows, wall = on_pool(self.start, created, workers)
        after = cpu_now()
        spent = {key: after[key] - before[key] for key in after}
        calls = "; ".join(
            f"{call} p50 {percentile(times, 0.5):.2f} s, max {max(times):.2f} s"
            for call, times in ((call, [row[call] for row in rows]) for call in rows[0])
        )
        busy = spent["machine busy"] / wall / (os.cpu_count() or 1)
        print(
            f"| {mode} | {count} | {wall:.1f} | {calls} | {spent['dockerd'] / count:.3f} "
            f"| {spent['containerd'] / count:.3f} | {busy:.0%} "
            f"| {os.getloadavg()[0]:.1f} |",
            flush=True,
        )
        self.clean()


def main() -> None:
    count = int(os.environ.get("N", "100"))
    probe = Probe()
    print(
        "| mode | n | wall (s) | per call | dockerd CPU s per start | containerd CPU s per start "
        "| machine busy | load average |"
    )
    print("|---|---|---|---|---|---|---|---|")
    try:
        for mode in os.environ.get("MODES", "full8,prep8,noportprep8").split(","):
            probe.run(mode, count)
    finally:
        probe.clean()
        for network in probe.client.networks.list(names=[settings.CONTAINER_NETWORK]):
            if network.name == settings.CONTAINER_NETWORK:
                network.remove()


if __name__ == "__main__":
    main()
