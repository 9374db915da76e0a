"""What the build fence costs: a small DoPQ context (busybox, three RUN steps) built on the
real engine with the fence (no network, CPU quota, memory, the pids-limited parent cgroup)
and without it (the engine's bridge, no quota, no parent), alternately, in one run. Each
build has a line of its own, so the engine's cache never answers. Run with `make bench`;
writes docs/benchmarks/build-fence.md."""

import contextlib
import io
import os
import statistics
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from containers.build_fence import FenceMissing, cgroup_parent_argument, ensure_pids_fence
from containers.runtime import BuildFence, DockerRuntime
from tests.bench.conftest import machine

pytestmark = [pytest.mark.bench, pytest.mark.docker]
ROUNDS = 8
PARENT = "aivc-bench-build"


def context(marker: str, image: str) -> io.BytesIO:
    dockerfile = (
        f"FROM {image}\nRUN echo {marker} > /marker\nRUN for i in 1 2 3 4 5; do echo $i; done > /counts\n"
        "RUN sha256sum /marker /counts > /sums\n"
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    buffer.seek(0)
    return buffer


@pytest.mark.django_db
def test_the_build_fence_costs_little_beside_an_unfenced_build(
    engine_host, docker_client, test_image, write_figures
):
    try:
        ensure_pids_fence(parent=PARENT, limit=512)
        parent = cgroup_parent_argument(PARENT)
    except FenceMissing:
        parent = ""  # measured without the parent cgroup; the table says so
    fenced = BuildFence(timeout_s=120, memory_bytes=2**30, nano_cpus=2 * 10**9, cgroup_parent=parent)
    open_ = BuildFence(timeout_s=120, memory_bytes=0, nano_cpus=0, network="default")
    runtime = DockerRuntime(engine_host)
    times: dict[str, list[float]] = {"on": [], "off": []}
    tags = []
    try:
        for _ in range(ROUNDS):
            for name, fence in (("on", fenced), ("off", open_)):
                tag = f"aivc-bench/fence:{uuid.uuid4().hex[:12]}"
                tags.append(tag)
                started = time.perf_counter()
                runtime.build_image(
                    tag=tag, context=context(uuid.uuid4().hex, test_image.reference), labels={}, fence=fence
                )
                times[name].append(time.perf_counter() - started)
    finally:
        for tag in tags:
            docker_client.images.remove(tag, force=True)
        for made in Path("/sys/fs/cgroup").glob(f"*/{PARENT}"):
            with contextlib.suppress(OSError):
                made.rmdir()  # the engine made the parent in every v1 hierarchy
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    text = (
        "# The build fence: cost of a fenced build\n\n"
        f"`tests/bench/test_build_fence.py`, {ROUNDS} builds each, alternating, one run "
        f"({machine()}; engine {docker_client.version().get('Version')}, classic builder). A busybox "
        "context with three RUN steps, never from the cache; load average "
        f"{os.getloadavg()[0]:.1f} at the end.\n\n"
        "| build | median | min | max |\n|---|---|---|---|\n"
        f"| fenced (network none, 2 CPUs, 1 GiB, pids parent{'' if parent else ' NOT set'}) | "
        f"{on:.2f} s | {min(times['on']):.2f} s | {max(times['on']):.2f} s |\n"
        f"| unfenced (bridge, no limits) | {off:.2f} s | {min(times['off']):.2f} s | "
        f"{max(times['off']):.2f} s |\n"
        f"\n**Ratio fenced / unfenced (medians): {on / off:.2f}**\n"
    )
    write_figures("build-fence.md", text)
    assert on / off < 3
