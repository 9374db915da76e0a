import os
import socket
import sys
import types
from dataclasses import dataclass
from io import StringIO

import pytest
from django.core.management import call_command

from containers.bootstrap import MachineFacts, host_bootstrap, read_meminfo
from containers.management.commands.bootstrap_host import probe_gpus
from containers.models import Host
from tests.factories import GpuFactory, HostFactory


@dataclass
class FakeGpu:
    index: int
    uuid: str
    name: str
    memory_total_mb: int


MACHINE = MachineFacts(cpus=32, ram_gb=125, swap_gb=8)


def test_it_reads_ram_and_swap_in_whole_gib(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       131891212 kB\nMemFree: 1 kB\nSwapTotal:       8388604 kB\n")
    assert read_meminfo(meminfo) == (125, 7)
    assert read_meminfo(tmp_path / "missing") == (0, 0)


@pytest.mark.django_db
def test_the_command_records_this_machine_without_any_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "containers.gpus", None)  # no NVML module at all
    out = StringIO()
    call_command("bootstrap_host", "--name", "this-box", "--address", "10.0.0.5", stdout=out)
    host = Host.objects.get(name="this-box")
    assert host.cpus == len(os.sched_getaffinity(0))
    assert host.ram_gb >= 1
    assert host.address == "10.0.0.5"
    assert not host.gpus.exists()
    assert "GPUs left as they were" in out.getvalue()


@pytest.mark.django_db
def test_the_command_names_the_host_after_this_machine_by_default(monkeypatch):
    monkeypatch.setitem(sys.modules, "containers.gpus", None)
    call_command("bootstrap_host", stdout=StringIO())
    assert Host.objects.filter(name=socket.gethostname()).exists()


@pytest.mark.django_db
def test_the_command_takes_gpus_from_the_nvml_probe(monkeypatch):
    fake = types.ModuleType("containers.gpus")
    fake.probe = lambda: [
        FakeGpu(0, "GPU-a", "NVIDIA H100", 81559),
        FakeGpu(1, "GPU-b", "NVIDIA H100", 81559),
    ]
    monkeypatch.setitem(sys.modules, "containers.gpus", fake)
    call_command("bootstrap_host", "--name", "h100-box", stdout=StringIO())
    host = Host.objects.get(name="h100-box")
    assert list(host.gpus.values_list("index", "uuid", "memory_mb")) == [
        (0, "GPU-a", 81559),
        (1, "GPU-b", 81559),
    ]


def test_a_probe_that_fails_leaves_the_gpus_unknown(monkeypatch):
    def broken_probe():
        raise RuntimeError("NVML Shared Library Not Found")

    fake = types.ModuleType("containers.gpus")
    fake.probe = broken_probe
    monkeypatch.setitem(sys.modules, "containers.gpus", fake)
    gpus, why = probe_gpus()
    assert gpus is None
    assert "NVML Shared Library Not Found" in why


@pytest.mark.django_db
def test_a_second_run_updates_the_host_and_switches_off_a_vanished_gpu():
    host = HostFactory(name="box", cpus=8, ram_gb=32, swap_gb=0, gpus=3)
    result = host_bootstrap(
        name="box",
        machine=MACHINE,
        gpus=[FakeGpu(0, "GPU-a", "RTX", 24576), FakeGpu(1, "GPU-b", "RTX", 24576)],
    )
    host.refresh_from_db()
    assert (host.cpus, host.ram_gb, host.swap_gb) == (32, 125, 8)
    assert sorted(result.changed_fields) == ["cpus", "ram_gb", "swap_gb"]
    assert result.gpus_missing == [2]
    assert list(host.gpus.filter(is_active=True).values_list("index", flat=True)) == [0, 1]
    again = host_bootstrap(
        name="box",
        machine=MACHINE,
        gpus=[FakeGpu(0, "GPU-a", "RTX", 24576), FakeGpu(1, "GPU-b", "RTX", 24576)],
    )
    assert (again.changed_fields, again.gpus_created, again.gpus_updated, again.gpus_missing) == (
        [],
        [],
        [],
        [],
    )


@pytest.mark.django_db
def test_unknown_gpus_leave_the_gpu_rows_alone():
    host = HostFactory(name="box", gpus=0)
    GpuFactory(host=host, index=0)
    host_bootstrap(name="box", machine=MACHINE, gpus=None)
    assert host.gpus.get().is_active
