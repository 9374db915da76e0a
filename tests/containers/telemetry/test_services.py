from datetime import timedelta

import pytest

from bookings.models import Reservation
from containers.events import GPU_DUPLICATE_WARNING, GPU_IDLE_RELEASE, GPU_IDLE_WARNING, GPU_INVENTORY_ERROR
from containers.gpus import ProbeResult
from containers.models import ContainerEvent, Gpu
from containers.telemetry.models import GpuDuplicateUse, GpuSample
from containers.telemetry.services import (
    gpu_duplicate_use_check,
    gpu_inventory_sync,
    gpu_samples_prune,
    gpu_samples_record,
    reservation_idle_update,
)
from tests.containers.telemetry.helpers import (
    CONTAINER_A,
    CONTAINER_B,
    in_container,
    minute_samples,
    reading,
    readings_matching,
    result_of,
    write_cgroup,
)
from tests.factories import ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db
UNAVAILABLE = ProbeResult(unavailable_reason="NVML Shared Library Not Found")


# Inventory ---------------------------------------------------------------------------


def test_a_new_gpu_is_added_with_an_info_event(host, now):
    gpus = list(host.gpus.all())
    result = result_of(
        *readings_matching(gpus).gpus, reading(2, uuid="GPU-new", name="NVIDIA A100", memory_total_mb=40960)
    )

    events = gpu_inventory_sync(host=host, result=result, now=now)

    added = Gpu.objects.get(host=host, index=2)
    assert (added.uuid, added.name, added.memory_mb, added.is_active) == (
        "GPU-new",
        "NVIDIA A100",
        40960,
        True,
    )
    assert [(event.level, event.sign) for event in events] == [(ContainerEvent.Level.INFO, "")]


def test_a_gpu_whose_uuid_changes_raises_an_error_event_and_the_row_follows(host, now):
    gpu0, gpu1 = host.gpus.all()
    result = result_of(*readings_matching([gpu0]).gpus, reading(1, uuid="GPU-swapped"))

    (event,) = gpu_inventory_sync(host=host, result=result, now=now)

    assert (event.level, event.sign, event.host) == (
        ContainerEvent.Level.ERROR,
        GPU_INVENTORY_ERROR.sign,
        host,
    )
    assert f"uuid {gpu1.uuid} -> GPU-swapped" in event.message
    assert Gpu.objects.get(pk=gpu1.pk).uuid == "GPU-swapped"


def test_a_gpu_whose_memory_or_name_changes_raises_an_error_event(host, now):
    gpu0, gpu1 = host.gpus.all()
    result = result_of(
        reading(0, uuid=gpu0.uuid, name="NVIDIA RTX A6000", memory_total_mb=gpu0.memory_mb),
        reading(1, uuid=gpu1.uuid, name=gpu1.name, memory_total_mb=12288),
    )

    events = gpu_inventory_sync(host=host, result=result, now=now)

    assert [event.level for event in events] == [ContainerEvent.Level.ERROR] * 2
    assert "name NVIDIA GeForce RTX 3090 -> NVIDIA RTX A6000" in events[0].message
    assert "memory 24576 -> 12288" in events[1].message


def test_a_gpu_that_disappears_is_taken_out_of_service_with_an_error_event(host, now):
    gpu0, gpu1 = host.gpus.all()
    ReservationFactory(host=host, start=local(2026, 3, 3, 10), gpus=[gpu1])

    (event,) = gpu_inventory_sync(host=host, result=readings_matching([gpu0]), now=now)

    gpu1.refresh_from_db()
    assert not gpu1.is_active
    assert (event.level, event.sign) == (ContainerEvent.Level.ERROR, GPU_INVENTORY_ERROR.sign)
    assert "no longer reported" in event.message
    assert "1 live allocation" in event.message
    assert "[ERROR] GPUInventoryError, gpu-01 GPU 1" in event.as_log_line()


def test_the_same_gpus_again_write_nothing(host, now):
    assert gpu_inventory_sync(host=host, result=readings_matching(list(host.gpus.all())), now=now) == []
    assert ContainerEvent.objects.count() == 0


def test_blank_fields_are_filled_in_without_an_error(host, now):
    Gpu.objects.filter(host=host).update(uuid="", name="", memory_mb=0)

    events = gpu_inventory_sync(host=host, result=result_of(reading(0), reading(1)), now=now)

    assert events == []
    assert Gpu.objects.get(host=host, index=0).uuid == reading(0).uuid


def test_an_unavailable_probe_changes_no_gpu(host, now):
    assert gpu_inventory_sync(host=host, result=UNAVAILABLE, now=now) == []
    assert list(host.gpus.values_list("is_active", flat=True)) == [True, True]
    assert ContainerEvent.objects.count() == 0


# Samples and retention -----------------------------------------------------------------


def test_it_stores_one_sample_per_known_gpu(host, now):
    result = result_of(
        reading(0, utilisation=37, memory_used_mb=6144, pids=(1, 2)), reading(1), reading(5, utilisation=99)
    )

    gpu_samples_record(host=host, result=result, now=now)

    rows = list(
        GpuSample.objects.order_by("gpu__index").values_list(
            "gpu__index", "utilisation_percent", "memory_used_mb", "process_count"
        )
    )
    assert rows == [(0, 37, 6144, 2), (1, 0, 0, 0)]
    assert set(GpuSample.objects.values_list("taken_at", flat=True)) == {now}


def test_an_unavailable_probe_stores_nothing(host, now):
    assert gpu_samples_record(host=host, result=UNAVAILABLE, now=now) == []
    assert not GpuSample.objects.exists()


def test_it_prunes_samples_older_than_thirty_days_by_default(host, now):
    gpu = host.gpus.first()
    minute_samples(
        gpu, now - timedelta(days=31), now - timedelta(days=31) + timedelta(minutes=3), utilisation=1
    )
    kept = minute_samples(
        gpu, now - timedelta(days=29), now - timedelta(days=29) + timedelta(minutes=2), utilisation=1
    )

    assert gpu_samples_prune(now=now) == 3
    assert set(GpuSample.objects.values_list("pk", flat=True)) == {sample.pk for sample in kept}


def test_the_retention_comes_from_the_settings(host, now, settings):
    settings.GPU_SAMPLE_RETENTION_DAYS = 7
    gpu = host.gpus.first()
    minute_samples(
        gpu, now - timedelta(days=8), now - timedelta(days=8) + timedelta(minutes=1), utilisation=1
    )
    minute_samples(
        gpu, now - timedelta(days=6), now - timedelta(days=6) + timedelta(minutes=1), utilisation=1
    )

    assert gpu_samples_prune(now=now) == 1
    assert GpuSample.objects.count() == 1


# Duplicate use -----------------------------------------------------------------------


@pytest.fixture
def holder(host):
    """Reservation #1 holds GPU 0 now, in container A."""
    return ReservationFactory(
        host=host,
        user=UserFactory(username="m11007s05"),
        status=Reservation.Status.RUNNING,
        container_id=CONTAINER_A[:12],
        gpus=[host.gpus.get(index=0)],
    )


def test_a_process_on_an_unbooked_gpu_warns(host, now, tmp_path):
    in_container(tmp_path, 4242, CONTAINER_B)

    (event,) = gpu_duplicate_use_check(
        host=host, result=result_of(reading(0), reading(1, pids=(4242,))), now=now, proc_root=tmp_path
    )

    assert (event.level, event.sign, event.host, event.reservation) == (
        ContainerEvent.Level.WARNING,
        GPU_DUPLICATE_WARNING.sign,
        host,
        None,
    )
    assert event.message == (
        f"gpu-01 GPU 1 ({host.gpus.get(index=1).uuid}) runs process 4242 using 512 MiB in container "
        f"{CONTAINER_B[:12]}, but no reservation holds it"
    )


def test_a_process_of_another_container_on_a_booked_gpu_warns(host, holder, now, tmp_path):
    other = ReservationFactory(
        host=host,
        user=UserFactory(username="m11007s06"),
        status=Reservation.Status.RUNNING,
        container_id=CONTAINER_B,
        gpus=[host.gpus.get(index=1)],
    )
    in_container(tmp_path, 4242, CONTAINER_B)

    (event,) = gpu_duplicate_use_check(
        host=host, result=result_of(reading(0, pids=(4242,))), now=now, proc_root=tmp_path
    )

    assert (event.sign, event.reservation, event.user) == (GPU_DUPLICATE_WARNING.sign, holder, other.user)
    assert f"in container {CONTAINER_B[:12]} of reservation #{other.pk} (m11007s06)" in event.message
    assert event.message.endswith(f"but reservation #{holder.pk} (m11007s05) holds it")


def test_the_holders_own_container_gives_no_warning(host, holder, now, tmp_path):
    write_cgroup(tmp_path, 4242, f"12:devices:/docker/{CONTAINER_A}\n")

    events = gpu_duplicate_use_check(
        host=host, result=result_of(reading(0, pids=(4242,))), now=now, proc_root=tmp_path
    )

    assert events == []
    assert not GpuDuplicateUse.objects.exists()


def test_the_last_holders_container_on_its_way_out_gives_no_warning(host, holder, now, tmp_path):
    # Released a minute ago; the reconcile tick has not removed its container yet.
    Reservation.objects.filter(pk=holder.pk).update(
        status=Reservation.Status.ENDED,
        end=now - timedelta(minutes=1),
        released_at=now - timedelta(minutes=1),
    )
    holder.allocations.update(end=now - timedelta(minutes=1))
    in_container(tmp_path, 4242, CONTAINER_A)
    result = result_of(reading(0, pids=(4242,)))

    assert gpu_duplicate_use_check(host=host, result=result, now=now, proc_root=tmp_path) == []
    # Still there long after the tick should have removed it: that is worth a look.
    later = gpu_duplicate_use_check(
        host=host, result=result, now=now + timedelta(minutes=10), proc_root=tmp_path
    )
    assert len(later) == 1 and "no reservation holds it" in later[0].message


def test_a_host_process_on_a_booked_gpu_warns(host, holder, now, tmp_path):
    write_cgroup(tmp_path, 777, "0::/user.slice/user-0.slice/session-1.scope\n")

    (event,) = gpu_duplicate_use_check(
        host=host, result=result_of(reading(0, pids=(777,))), now=now, proc_root=tmp_path
    )

    assert "process 777 using 512 MiB in no container (a host process)" in event.message


def test_the_same_process_warns_once_per_holder(host, holder, now, tmp_path):
    in_container(tmp_path, 4242, CONTAINER_B)
    result = result_of(reading(0, pids=(4242,)))

    first = gpu_duplicate_use_check(host=host, result=result, now=now, proc_root=tmp_path)
    later = now + timedelta(minutes=5)
    again = gpu_duplicate_use_check(host=host, result=result, now=later, proc_root=tmp_path)

    assert len(first) == 1
    assert again == []
    sighting = GpuDuplicateUse.objects.get()
    assert (sighting.first_seen_at, sighting.last_seen_at, sighting.event) == (now, later, first[0])
    assert ContainerEvent.objects.filter(sign=GPU_DUPLICATE_WARNING.sign).count() == 1


def test_the_same_process_warns_again_under_the_next_holder(host, holder, now, tmp_path):
    in_container(tmp_path, 4242, CONTAINER_B)
    result = result_of(reading(0, pids=(4242,)))
    gpu_duplicate_use_check(host=host, result=result, now=now, proc_root=tmp_path)
    next_holder = ReservationFactory(
        host=host,
        start=holder.end,
        end=holder.end + timedelta(hours=1),
        status=Reservation.Status.RUNNING,
        container_id="c" * 64,
        gpus=[host.gpus.get(index=0)],
    )

    (event,) = gpu_duplicate_use_check(
        host=host, result=result, now=holder.end + timedelta(minutes=1), proc_root=tmp_path
    )

    assert event.reservation == next_holder


def test_an_unbooked_gpu_warns_once_per_process(host, now, tmp_path):
    result = result_of(reading(1, pids=(4242, 4243)))

    first = gpu_duplicate_use_check(host=host, result=result, now=now, proc_root=tmp_path)
    again = gpu_duplicate_use_check(
        host=host, result=result, now=now + timedelta(minutes=1), proc_root=tmp_path
    )

    assert len(first) == 2
    assert again == []


def test_a_starting_reservation_without_a_container_id_is_not_judged(host, holder, now, tmp_path):
    Reservation.objects.filter(pk=holder.pk).update(status=Reservation.Status.STARTING, container_id="")
    in_container(tmp_path, 4242, CONTAINER_A)

    assert (
        gpu_duplicate_use_check(
            host=host, result=result_of(reading(0, pids=(4242,))), now=now, proc_root=tmp_path
        )
        == []
    )


def test_a_cancelled_reservation_holds_nothing(host, holder, now, tmp_path):
    Reservation.objects.filter(pk=holder.pk).update(status=Reservation.Status.CANCELLED)
    in_container(tmp_path, 4242, CONTAINER_A)

    (event,) = gpu_duplicate_use_check(
        host=host, result=result_of(reading(0, pids=(4242,))), now=now, proc_root=tmp_path
    )

    assert event.message.endswith("but no reservation holds it")


# Idle reservations -----------------------------------------------------------------------


@pytest.fixture
def running(host):
    """Running since 08:00 on both GPUs, until 14:00."""
    return ReservationFactory(
        host=host,
        start=local(2026, 3, 2, 8),
        end=local(2026, 3, 2, 14),
        started_at=local(2026, 3, 2, 8),
        status=Reservation.Status.RUNNING,
        gpus=list(host.gpus.all()),
    )


def idle_hour(running, until, *, busy_gpu_utilisation: int = 2, extra: timedelta = timedelta()):
    """Samples every minute from an hour before `until` to `until` (plus `extra`), all under
    5% unless `busy_gpu_utilisation` says otherwise for GPU 1."""
    gpu0, gpu1 = running.host.gpus.all()
    start, end = until - timedelta(minutes=60), until + extra + timedelta(minutes=1)
    minute_samples(gpu0, start, end, utilisation=0)
    minute_samples(gpu1, start, end, utilisation=busy_gpu_utilisation)


def test_a_batch_jobs_reservation_is_never_flagged_idle(running, now):
    Reservation.objects.filter(pk=running.pk).update(kind=Reservation.Kind.JOB)
    idle_hour(running, now)

    assert reservation_idle_update(host=running.host, now=now) == []
    assert not ContainerEvent.objects.filter(sign=GPU_IDLE_WARNING.sign).exists()


def test_a_reservation_idle_for_the_whole_window_is_flagged(running, now):
    idle_hour(running, now)

    (status,) = reservation_idle_update(host=running.host, now=now)

    assert status.idle_flagged_at == now
    event = ContainerEvent.objects.get(sign=GPU_IDLE_WARNING.sign)
    assert (event.level, event.user, event.reservation) == (
        ContainerEvent.Level.WARNING,
        running.user,
        running,
    )
    assert "GPUs 0, 1 stayed under 5% utilisation for 60 minutes" in event.message


def test_one_busy_gpu_keeps_it_unflagged(running, now):
    idle_hour(running, now, busy_gpu_utilisation=5)

    (status,) = reservation_idle_update(host=running.host, now=now)

    assert status.idle_flagged_at is None
    assert not ContainerEvent.objects.exists()


def test_the_threshold_and_window_come_from_the_settings(running, now, settings):
    settings.GPU_IDLE_UTILISATION_PERCENT = 50
    settings.GPU_IDLE_MINUTES = 10
    gpu0, gpu1 = running.host.gpus.all()
    minute_samples(gpu0, now - timedelta(minutes=10), now + timedelta(minutes=1), utilisation=49)
    minute_samples(gpu1, now - timedelta(minutes=10), now + timedelta(minutes=1), utilisation=30)

    (status,) = reservation_idle_update(host=running.host, now=now)

    assert status.is_idle


def test_a_reservation_running_for_less_than_the_window_is_not_flagged(running, now):
    Reservation.objects.filter(pk=running.pk).update(started_at=now - timedelta(minutes=30))
    idle_hour(running, now)

    (status,) = reservation_idle_update(host=running.host, now=now)

    assert status.idle_flagged_at is None


def test_a_busy_sample_clears_the_flag(running, now):
    idle_hour(running, now)
    reservation_idle_update(host=running.host, now=now)
    later = now + timedelta(minutes=1)
    GpuSample.objects.create(
        gpu=running.host.gpus.first(), taken_at=later, utilisation_percent=80, memory_used_mb=1
    )

    (status,) = reservation_idle_update(host=running.host, now=later)

    assert status.idle_flagged_at is None


def test_missing_samples_leave_the_flag_as_it_was(running, now):
    idle_hour(running, now)
    reservation_idle_update(host=running.host, now=now)

    (status,) = reservation_idle_update(host=running.host, now=now + timedelta(minutes=30))

    assert status.idle_flagged_at == now
    assert ContainerEvent.objects.filter(sign=GPU_IDLE_WARNING.sign).count() == 1


def test_auto_release_is_off_by_default(running, now):
    idle_hour(running, now, extra=timedelta(hours=2))
    reservation_idle_update(host=running.host, now=now)

    (status,) = reservation_idle_update(host=running.host, now=now + timedelta(hours=2))

    running.refresh_from_db()
    assert status.is_idle and status.auto_released_at is None
    assert (running.status, running.end) == (Reservation.Status.RUNNING, local(2026, 3, 2, 14))
    assert not ContainerEvent.objects.filter(sign=GPU_IDLE_RELEASE.sign).exists()


@pytest.fixture
def auto_release(settings):
    settings.GPU_IDLE_AUTO_RELEASE = True
    settings.GPU_IDLE_RELEASE_GRACE_MINUTES = 30


def test_with_auto_release_on_an_idle_reservation_is_released_after_the_grace(running, now, auto_release):
    idle_hour(running, now, extra=timedelta(minutes=30))
    reservation_idle_update(host=running.host, now=now)
    reservation_idle_update(host=running.host, now=now + timedelta(minutes=29))
    running.refresh_from_db()
    assert running.released_at is None

    released_at = now + timedelta(minutes=30)
    (status,) = reservation_idle_update(host=running.host, now=released_at)

    running.refresh_from_db()
    assert (running.end, running.released_at, status.auto_released_at) == (
        released_at,
        released_at,
        released_at,
    )
    assert (
        "released in 30 minutes unless they get busy"
        in ContainerEvent.objects.get(sign=GPU_IDLE_WARNING.sign).message
    )
    assert ContainerEvent.objects.get(sign=GPU_IDLE_RELEASE.sign).user == running.user


def test_auto_release_needs_fresh_samples(running, now, auto_release):
    idle_hour(running, now)
    reservation_idle_update(host=running.host, now=now)

    reservation_idle_update(host=running.host, now=now + timedelta(hours=1))

    running.refresh_from_db()
    assert running.released_at is None
