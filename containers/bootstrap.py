"""What this machine has (CPUs, RAM, swap) and the write that records it as a Host.

GPU facts come from the caller (the bootstrap_host command asks the NVML module), so this
module stays in the inventory layer and imports nothing above it."""

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from django.db import transaction

from containers.models import Gpu, Host

KIB_PER_GIB = 1024 * 1024


class GpuFacts(Protocol):
    index: int
    uuid: str
    name: str
    memory_total_mb: int


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
    gpus_created: list[int] = field(default_factory=list)
    gpus_updated: list[int] = field(default_factory=list)
    gpus_missing: list[int] = field(default_factory=list)


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


@transaction.atomic
def host_bootstrap(
    *, name: str, machine: MachineFacts, gpus: Iterable[GpuFacts] | None, address: str | None = None
) -> BootstrapResult:
    """Creates or updates the Host called `name` with this machine's totals and its GPU
    rows. `gpus` None means the GPUs are unknown (no NVML): GPU rows are left alone. A GPU
    row whose index the probe no longer reports is switched off, never deleted (its
    allocations are history)."""
    host = Host.objects.select_for_update().filter(name=name).first()
    created = host is None
    values = {"cpus": machine.cpus, "ram_gb": machine.ram_gb, "swap_gb": machine.swap_gb}
    if address is not None:
        values["address"] = address
    if created:
        host = Host.objects.create(name=name, **values)
        changed = list(values)
    else:
        changed = [key for key, value in values.items() if getattr(host, key) != value]
        for key in changed:
            setattr(host, key, values[key])
        if changed:
            host.save(update_fields=changed)
    result = BootstrapResult(host=host, created=created, changed_fields=changed)
    if gpus is None:
        return result

    existing = {gpu.index: gpu for gpu in host.gpus.all()}
    seen = set()
    for facts in gpus:
        index = int(facts.index)
        seen.add(index)
        wanted = {
            "uuid": str(facts.uuid or ""),
            "name": str(facts.name or ""),
            "memory_mb": int(getattr(facts, "memory_total_mb", 0) or 0),
            "is_active": True,
        }
        gpu = existing.get(index)
        if gpu is None:
            Gpu.objects.create(host=host, index=index, **wanted)
            result.gpus_created.append(index)
            continue
        differing = [key for key, value in wanted.items() if getattr(gpu, key) != value]
        if differing:
            for key in differing:
                setattr(gpu, key, wanted[key])
            gpu.save(update_fields=differing)
            result.gpus_updated.append(index)
    for index, gpu in existing.items():
        if index not in seen and gpu.is_active:
            gpu.is_active = False
            gpu.save(update_fields=["is_active"])
            result.gpus_missing.append(index)
    return result
