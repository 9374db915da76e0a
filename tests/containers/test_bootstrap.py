import os
import socket
from io import StringIO

import pytest
from django.core.management import call_command

from containers import gpus
from containers.bootstrap import MachineFacts, host_bootstrap, read_meminfo
from containers.gpus import ProbeResult
from containers.models import ContainerEvent, Host
from tests.containers.telemetry.helpers import reading, readings_matching, result_of
from tests.factories import GpuFactory, HostFactory

MACHINE = MachineFacts(cpus=32, ram_gb=125, swap_gb=8)
NO_DRIVER = ProbeResult(unavailable_reason="NVML Shared Library Not Found")


def test_it_reads_ram_and_swap_in_whole_gib(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       131891212 kB\nMemFree: 1 kB\nSwapTotal:       8388604 kB\n")
    assert read_meminfo(meminfo) == (125, 7)
    assert read_meminfo(tmp_path / "missing") == (0, 0)


@pytest.mark.django_db
def test_the_command_records_this_machine_without_a_gpu_driver():
    # This machine has nvidia-ml-py installed and no driver: the real probe answers.
    out = StringIO()
    call_command("bootstrap_host", "--name", "this-box", "--address", "10.0.0.5", stdout=out)
    host = Host.objects.get(name="this-box")
    assert host.cpus == len(os.sched_getaffinity(0))
    assert host.ram_gb >= 1
    assert host.address == "10.0.0.5"
    assert not host.gpus.exists()
    assert "GPUs left as they were" in out.getvalue()


@pytest.mark.django_db
def test_without_a_driver_the_gpu_rows_stay_in_service(monkeypatch):
    host = HostFactory(name="box", gpus=2)
    monkeypatch.setattr(gpus, "probe", lambda: NO_DRIVER)
    call_command("bootstrap_host", "--name", "box", stdout=StringIO())
    assert host.gpus.filter(is_active=True).count() == 2


@pytest.mark.django_db
def test_the_command_names_the_host_after_this_machine_by_default(monkeypatch):
    monkeypatch.setattr(gpus, "probe", lambda: NO_DRIVER)
    call_command("bootstrap_host", stdout=StringIO())
    assert Host.objects.filter(name=socket.gethostname()).exists()


@pytest.mark.django_db
def test_the_command_takes_gpus_from_the_nvml_probe(monkeypatch):
    found = result_of(
        reading(0, uuid="GPU-a", name="NVIDIA H100", memory_total_mb=81559),
        reading(1, uuid="GPU-b", name="NVIDIA H100", memory_total_mb=81559),
    )
    monkeypatch.setattr(gpus, "probe", lambda: found)
    out = StringIO()
    call_command("bootstrap_host", "--name", "h100-box", stdout=out)
    host = Host.objects.get(name="h100-box")
    assert list(host.gpus.values_list("index", "uuid", "memory_mb")) == [
        (0, "GPU-a", 81559),
        (1, "GPU-b", 81559),
    ]
    assert "2 GPU(s) found." in out.getvalue()


@pytest.mark.django_db
def test_a_second_run_updates_the_host_and_takes_a_vanished_gpu_out_of_service(monkeypatch):
    host = HostFactory(name="box", cpus=8, ram_gb=32, swap_gb=0, gpus=3)
    monkeypatch.setattr(gpus, "probe", lambda: readings_matching(list(host.gpus.order_by("index"))[:2]))
    monkeypatch.setattr("containers.management.commands.bootstrap_host.detect_machine", lambda: MACHINE)
    call_command("bootstrap_host", "--name", "box", stdout=StringIO())
    host.refresh_from_db()
    assert (host.cpus, host.ram_gb, host.swap_gb) == (32, 125, 8)
    assert list(host.gpus.filter(is_active=True).values_list("index", flat=True)) == [0, 1]
    assert ContainerEvent.objects.filter(level="ERROR", host=host).count() == 1


@pytest.mark.django_db
def test_host_bootstrap_changes_nothing_the_second_time():
    first = host_bootstrap(name="box", machine=MACHINE)
    again = host_bootstrap(name="box", machine=MACHINE)
    assert first.created and not again.created
    assert again.changed_fields == []


@pytest.mark.django_db
def test_an_existing_gpu_row_is_kept_when_the_probe_reports_it(monkeypatch):
    host = HostFactory(name="box", gpus=0)
    gpu = GpuFactory(host=host, index=0)
    monkeypatch.setattr(gpus, "probe", lambda: readings_matching([gpu]))
    call_command("bootstrap_host", "--name", "box", stdout=StringIO())
    gpu.refresh_from_db()
    assert gpu.is_active and not ContainerEvent.objects.filter(level="ERROR").exists()
