"""A stand-in for NVML that a separate process can be given: an agent started by a test
with GPU_PROBE=tests.containers.nvml_file_probe.JsonFileProbe and AIVC_FAKE_NVML=<file>
reads its GPUs from that JSON file, which the test writes (and rewrites) for that agent
alone. Every read is logged beside the file (`<file>.reads`: the reader's AIVC_HOST and
pid), so a test can tell which agent looked at which server's GPUs.

The file holds what NVML would answer:
    {"driver_version": "550.54.15",
     "gpus": [{"index": 0, "uuid": "GPU-...", "name": "...", "memory_total_mb": 24576,
               "memory_used_mb": 1200, "utilisation_percent": 40,
               "processes": [{"pid": 4242, "used_memory_mb": 1100}]}]}
or {"unavailable_reason": "..."}. Process ids are host pids, as NVML reports them, so the
duplicate-use check looks their containers up in /proc as it does on a GPU server."""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings

from containers.gpus import GpuProcess, GpuReading, ProbeResult

FILE_VARIABLE = "AIVC_FAKE_NVML"


def write_nvml(path: Path, *, gpus: list[dict], driver_version: str = "") -> None:
    """Replaces the file at once (write, then rename), so a reader never sees half of it."""
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(json.dumps({"driver_version": driver_version, "gpus": gpus}))
    partial.replace(path)


def reads_of(path: Path) -> list[tuple[str, int]]:
    """(AIVC_HOST, pid) of every read of the file so far."""
    log = path.with_name(f"{path.name}.reads")
    if not log.exists():
        return []
    return [(host, int(pid)) for host, pid in (line.split() for line in log.read_text().splitlines())]


class JsonFileProbe:
    def read(self) -> ProbeResult:
        path = Path(os.environ[FILE_VARIABLE])
        with open(path.with_name(f"{path.name}.reads"), "a") as log:
            log.write(f"{settings.AIVC_HOST or '-'} {os.getpid()}\n")
        data = json.loads(path.read_text())
        if data.get("unavailable_reason"):
            return ProbeResult(unavailable_reason=data["unavailable_reason"])
        return ProbeResult(
            gpus=tuple(
                GpuReading(
                    index=gpu["index"],
                    uuid=gpu["uuid"],
                    name=gpu.get("name", "NVIDIA GeForce RTX 3090"),
                    memory_total_mb=gpu.get("memory_total_mb", 24576),
                    memory_used_mb=gpu.get("memory_used_mb", 0),
                    utilisation_percent=gpu.get("utilisation_percent"),
                    processes=tuple(
                        GpuProcess(pid=process["pid"], used_memory_mb=process.get("used_memory_mb"))
                        for process in gpu.get("processes", ())
                    ),
                )
                for gpu in data.get("gpus", ())
            ),
            driver_version=data.get("driver_version", ""),
            cuda_driver_version=data.get("cuda_driver_version", ""),
        )
