"""GPUs on several hosts, each sampled by its own agent (a fake NVML per agent)."""

import pytest

from bookings.models import Reservation
from containers import gpus, tasks
from containers.agent_services import agent_claim
from containers.gpus import FakeProbe
from containers.models import ContainerEvent
from containers.specs import gpu_device_ids
from containers.telemetry.models import GpuSample
from containers.telemetry.services import gpu_renumber_sync
from tests.containers.telemetry.helpers import reading, result_of
from tests.factories import HostFactory, ReservationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_hosts(now):
    first, second = HostFactory(name="gpu-a", gpus=2), HostFactory(name="gpu-b", gpus=2)
    for host in (first, second):
        agent_claim(host=host, holder=f"{host.name}:1:x", now=now)
        host.refresh_from_db()
    return first, second


def nvml_of(host) -> FakeProbe:
    """What the host's own NVML reports: its GPUs, GPU 1 busy."""
    return FakeProbe(
        [reading(gpu.index, uuid=gpu.uuid, utilisation=50 * gpu.index) for gpu in host.gpus.order_by("index")]
    )


def test_each_agent_files_its_samples_under_its_own_hosts_gpus(two_hosts, settings, monkeypatch):
    first, second = two_hosts
    for host in (first, second):
        settings.AIVC_HOST = host.name
        monkeypatch.setattr(gpus, "probe", nvml_of(host).read)
        assert tasks.sample_gpus() == 2

    for host in (first, second):
        assert GpuSample.objects.filter(gpu__host=host).count() == 2


def test_the_central_scheduler_leaves_a_host_with_an_agent_to_that_agent(two_hosts, settings, monkeypatch):
    first, _ = two_hosts
    settings.AIVC_HOST = ""
    settings.GPU_HOST_NAME = first.name
    monkeypatch.setattr(gpus, "probe", nvml_of(first).read)

    assert tasks.sample_gpus() == 0
    assert not GpuSample.objects.exists()


def test_gpus_renumbered_after_a_reboot_keep_their_allocations_on_the_same_physical_gpu(host):
    gpu0, gpu1 = host.gpus.order_by("index")
    reservation = ReservationFactory(host=host, status=Reservation.Status.RUNNING, gpus=[gpu1])
    device_before = gpu_device_ids(reservation)

    # After the reboot NVML calls gpu1's card 0 and gpu0's card 1.
    events = gpu_renumber_sync(
        host=host, result=result_of(reading(0, uuid=gpu1.uuid), reading(1, uuid=gpu0.uuid))
    )

    gpu0.refresh_from_db()
    gpu1.refresh_from_db()
    assert (gpu0.index, gpu1.index) == (1, 0)
    assert Reservation.objects.get(pk=reservation.pk).gpu_indices() == [0]
    assert gpu_device_ids(Reservation.objects.get(pk=reservation.pk)) == device_before == [gpu1.uuid]
    [event] = events
    assert event.sign == "GPURenumbered" and gpu1.uuid in event.message


def test_gpus_in_the_same_order_raise_nothing(host):
    gpu0, gpu1 = host.gpus.order_by("index")

    assert (
        gpu_renumber_sync(host=host, result=result_of(reading(0, uuid=gpu0.uuid), reading(1, uuid=gpu1.uuid)))
        == []
    )
    assert not ContainerEvent.objects.exists()


def test_sampling_after_a_renumbering_files_each_reading_under_its_physical_gpu(host, settings, monkeypatch):
    gpu0, gpu1 = host.gpus.order_by("index")
    settings.GPU_HOST_NAME = host.name
    probe = FakeProbe([reading(0, uuid=gpu1.uuid, utilisation=90), reading(1, uuid=gpu0.uuid, utilisation=5)])
    monkeypatch.setattr(gpus, "probe", probe.read)

    tasks.sample_gpus()

    assert GpuSample.objects.get(gpu=gpu1).utilisation_percent == 90
    assert GpuSample.objects.get(gpu=gpu0).utilisation_percent == 5


def test_a_gpu_whose_uuid_was_never_read_is_requested_by_index(host):
    gpu = host.gpus.get(index=1)
    gpu.uuid = ""
    gpu.save()
    reservation = ReservationFactory(host=host, gpus=[gpu])

    assert gpu_device_ids(reservation) == ["1"]
