import pytest
from django.core.management import call_command
from django_q.models import Schedule

from bookings.models import Reservation
from containers import gpus, tasks
from containers.gpus import FakeProbe
from containers.models import ContainerEvent
from containers.telemetry.models import GpuSample
from tests.containers.telemetry.helpers import CONTAINER_B, in_container, reading
from tests.factories import ReservationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_gpus(monkeypatch, settings, tmp_path):
    """Two GPUs; GPU 0 busy with pid 4242 of a container nobody booked."""
    settings.GPU_PROC_ROOT = str(tmp_path)
    in_container(tmp_path, 4242, CONTAINER_B)
    probe = FakeProbe([reading(0, utilisation=88, memory_used_mb=4000, pids=(4242,)), reading(1)])
    monkeypatch.setattr(gpus, "probe", probe.read)


def test_sampling_stores_samples_and_warns_about_duplicate_use(host, fake_gpus):
    assert tasks.sample_gpus() == 2

    assert GpuSample.objects.count() == 2
    event = ContainerEvent.objects.get(sign="GPUDuplicateWarning")
    assert "process 4242" in event.message


def test_sampling_flags_nothing_for_a_reservation_that_just_started(host, fake_gpus):
    ReservationFactory(host=host, status=Reservation.Status.RUNNING, gpus=[host.gpus.get(index=1)])

    tasks.sample_gpus()

    assert not ContainerEvent.objects.filter(sign="GPUIdleWarning").exists()


def test_inventory_sync_reports_a_missing_gpu(host, monkeypatch):
    monkeypatch.setattr(gpus, "probe", FakeProbe([reading(0, uuid=host.gpus.get(index=0).uuid)]).read)

    assert tasks.sync_gpu_inventory() == 1
    assert not host.gpus.get(index=1).is_active


def test_the_tasks_do_nothing_without_a_host(db, fake_gpus):
    assert tasks.sample_gpus() == 0
    assert tasks.sync_gpu_inventory() == 0


def test_pruning_runs_as_a_task(host):
    assert tasks.prune_gpu_samples() == 0


def test_setup_schedules_registers_the_telemetry_tasks():
    call_command("setup_schedules")
    call_command("setup_schedules")

    schedules = {schedule.func: schedule.schedule_type for schedule in Schedule.objects.all()}
    assert schedules["containers.tasks.sample_gpus"] == Schedule.MINUTES
    assert schedules["containers.tasks.sync_gpu_inventory"] == Schedule.HOURLY
    assert schedules["containers.tasks.prune_gpu_samples"] == Schedule.DAILY
    assert Schedule.objects.filter(func="containers.tasks.sample_gpus").count() == 1
