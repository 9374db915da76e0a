"""Builders shared by the GPU telemetry tests."""

from datetime import datetime, timedelta
from pathlib import Path

from containers.gpus import GpuProcess, GpuReading, ProbeResult
from containers.models import Gpu
from containers.telemetry.models import GpuSample

CONTAINER_A = "a" * 12 + "0123456789abcdef" * 3 + "1234"
CONTAINER_B = "b" * 12 + "0123456789abcdef" * 3 + "5678"


def reading(
    index: int,
    *,
    utilisation: int | None = 0,
    memory_used_mb: int = 0,
    pids: tuple[int, ...] = (),
    uuid: str | None = None,
    name: str = "NVIDIA GeForce RTX 3090",
    memory_total_mb: int = 24576,
) -> GpuReading:
    return GpuReading(
        index=index,
        uuid=uuid or f"GPU-{index:08d}-0000-0000-0000-000000000000",
        name=name,
        memory_total_mb=memory_total_mb,
        memory_used_mb=memory_used_mb,
        utilisation_percent=utilisation,
        processes=tuple(GpuProcess(pid=pid, used_memory_mb=512) for pid in pids),
    )


def result_of(*readings: GpuReading) -> ProbeResult:
    return ProbeResult(gpus=readings)


def readings_matching(gpus: list[Gpu], **fields: object) -> ProbeResult:
    """A probe result that reports exactly these GPU rows."""
    return result_of(
        *(
            reading(gpu.index, uuid=gpu.uuid, name=gpu.name, memory_total_mb=gpu.memory_mb, **fields)
            for gpu in gpus
        )
    )


def write_cgroup(proc_root: Path, pid: int, content: str) -> None:
    folder = proc_root / str(pid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cgroup").write_text(content)


def in_container(proc_root: Path, pid: int, container_id: str) -> None:
    write_cgroup(proc_root, pid, f"0::/system.slice/docker-{container_id}.scope\n")


def minute_samples(
    gpu: Gpu, start: datetime, end: datetime, *, utilisation: int | None, memory_used_mb: int = 100
) -> list[GpuSample]:
    """A sample each minute in [start, end)."""
    samples, moment = [], start
    while moment < end:
        samples.append(
            GpuSample(
                gpu=gpu,
                taken_at=moment,
                utilisation_percent=utilisation,
                memory_used_mb=memory_used_mb,
            )
        )
        moment += timedelta(minutes=1)
    return GpuSample.objects.bulk_create(samples)
