"""The reconcile tick and the waker against the fake runtime: every transition."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import reservation_cancel, reservation_release
from containers import selectors
from containers.lifecycle import reconcile, wake_at_boundaries
from containers.models import ContainerEvent
from containers.runtime import GIB, LABEL_RESERVATION, ContainerSpec, FakeRuntime, LaunchFailed, scope_labels
from containers.tasks import prepare_image
from tests.containers.helpers import SpaceAuditFactory, engine, events, only_spec
from tests.factories import ReservationFactory

Status = Reservation.Status


def test_it_starts_a_due_reservation_with_exactly_what_was_booked(booking):
    reconcile()
    booking.refresh_from_db()
    spec = only_spec(booking)
    assert booking.status == Status.RUNNING
    assert booking.container_id and booking.started_at is not None
    assert spec.name == "aivc-m11007s05"
    assert spec.nano_cpus == 2_500_000_000
    # ram share 64/80: ceil(10 * 0.8) = 8 GiB RAM, 10 GiB with swap, 2 GiB shm.
    assert (spec.memory_bytes, spec.memory_swap_bytes, spec.shm_bytes) == (8 * GIB, 10 * GIB, 2 * GIB)
    assert spec.gpu_ids == ["1"]
    assert spec.environment["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert spec.ssh_port == booking.user.forward_port
    assert spec.command == ["python", "-c", "print(1)"]
    assert spec.labels[LABEL_RESERVATION] == str(booking.pk)
    assert spec.labels["aivc.user"] == "m11007s05"
    targets = {mount.target: mount for mount in spec.mounts}
    assert targets["/root/Dataset"].read_only
    assert not targets["/root/Work"].read_only
    assert targets["/root/Work"].source.endswith("/work/m11007s05")
    assert targets["/root/Backup"].source.endswith("/backup/m11007s05")
    assert targets["/root/.ssh/authorized_keys"].read_only
    assert "/etc/ssh/ssh_host_ed25519_key" in targets
    [started] = events(booking, level="INFO")
    assert "m11007s05's container aivc-m11007s05 started" in started.as_log_line()


def test_a_reservation_without_gpus_sees_none(booking):
    booking.allocations.all().delete()
    reconcile()
    spec = only_spec(booking)
    assert spec.gpu_ids == []
    assert spec.environment["NVIDIA_VISIBLE_DEVICES"] == "none"


def test_it_leaves_a_future_reservation_alone(booking):
    Reservation.objects.filter(pk=booking.pk).update(
        start=timezone.now() + timedelta(minutes=30), end=timezone.now() + timedelta(hours=2)
    )
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.SCHEDULED
    assert engine(booking).containers == {}


def test_a_second_tick_changes_nothing(booking):
    reconcile()
    reconcile()
    booking.refresh_from_db()
    assert len(engine(booking).runs) == 1
    assert booking.status == Status.RUNNING
    assert len(events(booking)) == 1


def test_it_removes_the_container_once_the_window_is_over(booking):
    reconcile()
    Reservation.objects.filter(pk=booking.pk).update(end=timezone.now() - timedelta(seconds=1))
    reconcile()
    booking.refresh_from_db()
    assert engine(booking).containers == {}
    assert booking.status == Status.ENDED
    assert booking.ended_at is not None
    assert "stopped and removed" in events(booking)[-1].message


def test_a_release_removes_the_container_on_the_next_tick(booking):
    reconcile()
    reservation_release(reservation=booking)
    reconcile()
    booking.refresh_from_db()
    assert engine(booking).containers == {}
    assert booking.status == Status.ENDED


def test_a_cancelled_reservation_is_never_launched(booking):
    later = timezone.now() + timedelta(hours=1)
    Reservation.objects.filter(pk=booking.pk).update(start=later, end=later + timedelta(hours=1))
    booking.refresh_from_db()
    reservation_cancel(reservation=booking)
    Reservation.objects.filter(pk=booking.pk).update(start=timezone.now() - timedelta(minutes=1))
    reconcile()
    assert engine(booking).runs == []


def test_a_container_whose_reservation_was_cancelled_is_removed(booking):
    reconcile()
    Reservation.objects.filter(pk=booking.pk).update(status=Status.CANCELLED)
    reconcile()
    assert engine(booking).containers == {}


def test_an_orphan_container_is_removed_and_logged(booking, fake_runtime):
    runtime = fake_runtime(booking.host)
    orphan = runtime.run(
        ContainerSpec(
            name="aivc-someone",
            image="x",
            command=None,
            nano_cpus=1,
            memory_bytes=1,
            memory_swap_bytes=1,
            shm_bytes=0,
            gpu_ids=[],
            environment={},
            ssh_port=1,
            mounts=[],
            labels={**scope_labels(booking.host), LABEL_RESERVATION: "999999"},
        )
    )
    reconcile()
    assert orphan.id not in engine(booking).containers
    [warning] = events(booking, sign="OrphanContainer")
    assert warning.level == "WARNING"
    assert "aivc-someone" in warning.message


def test_a_container_of_another_scope_is_never_touched(booking, fake_runtime, settings):
    settings.CONTAINER_SCOPE = "another-portal"
    reconcile()
    settings.CONTAINER_SCOPE = "aivc"
    Reservation.objects.filter(pk=booking.pk).update(status=Status.CANCELLED)
    reconcile()
    assert len(engine(booking).containers) == 1


def test_an_unreachable_engine_keeps_the_reservation_due_and_logs_once(booking):
    engine(booking).reachable = False
    reconcile()
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.SCHEDULED
    [error] = events(booking, level="ERROR")
    assert error.sign == "EngineUnavailable"
    engine(booking).reachable = True
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING


def test_a_missing_image_fails_the_reservation_and_frees_its_gpus(booking):
    engine(booking).images = {"something/else:latest"}
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.STARTING  # waits while the host's agent tries a pull
    prepare_image(booking.pk)  # the pull fails: the engine knows no such image
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.FAILED
    assert "lab/aivc-server:latest is not on" in booking.status_message
    assert not booking.allocations.filter(active=True).exists()
    signs = {event.sign for event in events(booking, level="ERROR")}
    assert signs == {"ImagePullFailed", "ImageMissing"}


def test_a_container_that_died_is_restarted_and_logged(booking):
    reconcile()
    engine(booking).kill("aivc-m11007s05")
    reconcile()
    booking.refresh_from_db()
    assert engine(booking).running_names() == ["aivc-m11007s05"]
    assert len(engine(booking).containers) == 1
    assert booking.restart_count == 1
    [warning] = events(booking, sign="ContainerDied")
    assert "restarting it (1 of 3)" in warning.message


def test_a_container_that_keeps_dying_fails_after_the_limit(booking, settings):
    settings.CONTAINER_MAX_RESTARTS = 2
    reconcile()
    for _ in range(3):
        engine(booking).kill("aivc-m11007s05")
        reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.FAILED
    assert engine(booking).running_names() == []
    assert events(booking, level="ERROR")[-1].sign == "ContainerDied"


def test_a_container_removed_from_outside_comes_back(booking):
    reconcile()
    engine(booking).containers.clear()
    reconcile()
    booking.refresh_from_db()
    assert engine(booking).running_names() == ["aivc-m11007s05"]
    assert booking.restart_count == 1


def test_a_maintainers_restart_recreates_the_container_once(booking):
    reconcile()
    first_id = Reservation.objects.get(pk=booking.pk).container_id
    Reservation.objects.filter(pk=booking.pk).update(restart_requested=True)
    reconcile()
    reconcile()
    booking.refresh_from_db()
    assert not booking.restart_requested
    assert booking.container_id != first_id
    assert len(engine(booking).runs) == 2
    assert booking.restart_count == 0


def test_a_tick_that_crashed_after_starting_the_container_is_adopted(booking, fake_runtime):
    reconcile()
    Reservation.objects.filter(pk=booking.pk).update(status=Status.STARTING, container_id="")
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING
    assert booking.container_id in engine(booking).containers
    assert len(engine(booking).runs) == 1


def test_a_reservation_whose_window_passed_unlaunched_fails(booking):
    Reservation.objects.filter(pk=booking.pk).update(
        start=timezone.now() - timedelta(hours=2), end=timezone.now() - timedelta(hours=1)
    )
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.FAILED
    assert "never started" in booking.status_message


def test_over_quota_blocks_the_launch_with_the_figures(booking):
    SpaceAuditFactory(user=booking.user, host=booking.host, work_gb=250.5, backup_gb=1, over_quota=True)
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.BLOCKED
    assert "work folder 250.5 GB of 200 GB" in booking.status_message
    assert engine(booking).runs == []
    [warning] = events(booking, sign="SpaceWarning")
    assert warning.level == "WARNING"


def test_an_audit_that_timed_out_under_quota_does_not_lift_a_block(booking):
    SpaceAuditFactory(user=booking.user, host=booking.host, work_gb=250, backup_gb=1, over_quota=True)
    SpaceAuditFactory(user=booking.user, host=booking.host, work_gb=1, backup_gb=1, complete=False)
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.BLOCKED


def test_the_next_boundary_is_the_first_start_or_end_ahead(booking):
    now = timezone.now()
    Reservation.objects.filter(pk=booking.pk).update(
        start=now + timedelta(seconds=40), end=now + timedelta(hours=1)
    )
    assert selectors.next_boundary(after=now, until=now + timedelta(seconds=60)) == now + timedelta(
        seconds=40
    )
    assert selectors.next_boundary(after=now, until=now + timedelta(seconds=30)) is None


def test_the_waker_reconciles_at_the_start_instant(booking):
    Reservation.objects.filter(pk=booking.pk).update(start=timezone.now() + timedelta(seconds=1))
    wake_at_boundaries()
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING


@pytest.mark.django_db(transaction=True)
def test_two_ticks_at_once_start_one_container(
    engine_host, fake_runtime, default_profile, window, monkeypatch
):
    reservation = ReservationFactory(host=engine_host, **window)
    original_run = FakeRuntime.run

    def slow_run(self, spec):
        time.sleep(0.3)
        return original_run(self, spec)

    monkeypatch.setattr(FakeRuntime, "run", slow_run)
    errors = []

    def tick():
        try:
            reconcile(wake=False)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(engine(reservation).runs) == 1
    assert not ContainerEvent.objects.filter(sign="LaunchError").exists()


def test_an_engine_that_refuses_a_removal_is_logged_and_retried(booking, monkeypatch):
    reconcile()
    Reservation.objects.filter(pk=booking.pk).update(status=Status.CANCELLED)

    def refuse(self, container_id):
        raise LaunchFailed("device or resource busy")

    monkeypatch.setattr(FakeRuntime, "remove", refuse)
    reconcile()
    [error] = events(booking, sign="ReconcileError")
    assert "device or resource busy" in error.message
    monkeypatch.undo()
    reconcile()
    assert engine(booking).containers == {}
