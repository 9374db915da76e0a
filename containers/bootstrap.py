"""What this machine has (CPUs, RAM, swap) and the write that records it as a Host. Its
GPU rows are synced by the telemetry inventory service, the same one the hourly task runs."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from containers.inventory_services import host_create_or_update
from containers.models import Host

KIB_PER_GIB = 1024 * 1024


@dataclass(frozen=True)
class MachineFacts:
    cpus: int
    ram_gb: int
    swap_gb: int


@dataclass
class BootstrapResult:
    host: Host
    created: bool
    changed_fields: list[str] = field(default_factory=list)


def detect_cpus() -> int:
    """CPUs this process may run on (a cgroup or taskset can hold fewer than the machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def read_meminfo(path: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(RAM, swap) in whole GiB, rounded down, from /proc/meminfo; (0, 0) where unreadable."""
    totals = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "SwapTotal"):
                totals[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return totals.get("MemTotal", 0) // KIB_PER_GIB, totals.get("SwapTotal", 0) // KIB_PER_GIB


def detect_machine() -> MachineFacts:
    ram_gb, swap_gb = read_meminfo()
    return MachineFacts(cpus=detect_cpus(), ram_gb=ram_gb, swap_gb=swap_gb)


def host_bootstrap(*, name: str, machine: MachineFacts, address: str | None = None) -> BootstrapResult:
    """Creates or updates the Host called `name` with this machine's totals."""
    values = {"cpus": machine.cpus, "ram_gb": machine.ram_gb, "swap_gb": machine.swap_gb}
    if address is not None:
        values["address"] = address
    saved = host_create_or_update(name=name, **values)
    return BootstrapResult(host=saved.instance, created=saved.created, changed_fields=saved.changed)
