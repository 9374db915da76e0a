"""The reconcile tick and the waker against the fake runtime: every transition."""

import errno
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import reservation_cancel, reservation_release
from containers import lifecycle, selectors
from containers.fake_runtime import FakeRuntime
from containers.lifecycle import reconcile, wake_at_boundaries
from containers.models import ContainerEvent
from containers.runtime import LaunchFailed
from containers.specs import GIB, LABEL_HOST_ID, LABEL_RESERVATION, ContainerSpec, scope_labels
from containers.tasks import prepare_image
from tests.containers.helpers import SpaceAuditFactory, engine, events, only_spec
from tests.factories import HostFactory, ReservationFactory, UserFactory

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
    # The engine is asked for the GPU by its UUID, the same physical GPU whatever its index.
    gpu_uuid = booking.host.gpus.get(index=1).uuid
    assert spec.gpu_ids == [gpu_uuid]
    assert spec.environment["NVIDIA_VISIBLE_DEVICES"] == gpu_uuid
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


def test_an_extension_committed_after_the_tick_read_the_window_keeps_the_container(booking, monkeypatch):
    # The student extends in the last second (or the agent's clock runs ahead of the web's):
    # the tick read the window as over, and the extension commits before it acts on that.
    reconcile()
    now = timezone.now()
    Reservation.objects.filter(pk=booking.pk).update(end=now - timedelta(seconds=1))
    read_window = selectors.reservations_past_window

    def read_then_extended(**kwargs):
        rows = list(read_window(**kwargs))
        Reservation.objects.filter(pk=booking.pk).update(end=now + timedelta(hours=2))
        return Reservation.objects.filter(pk__in=[row.pk for row in rows])

    monkeypatch.setattr(selectors, "reservations_past_window", read_then_extended)
    reconcile()
    monkeypatch.undo()
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING
    assert len(engine(booking).containers) == 1
    reconcile()  # the next tick sees the new end and keeps the container as it is
    assert len(engine(booking).runs) == 1 and len(engine(booking).containers) == 1


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


# Fault containment: one reservation or one host never stops the rest of a tick ----------


@pytest.fixture
def second_host(db, tmp_path):
    """A host named after engine_host ("engine-…" < "zz-…"), so it is reconciled after it."""
    roots = {name: tmp_path / f"second-{name}" for name in ("work", "backup", "dataset")}
    for path in roots.values():
        path.mkdir()
    return HostFactory(
        name="zz-second",
        gpus=1,
        work_root=str(roots["work"]),
        backup_root=str(roots["backup"]),
        dataset_root=str(roots["dataset"]),
    )


@pytest.fixture
def released_on_second_host(second_host, window, fake_runtime, default_profile):
    """A reservation on the second host whose container runs, then released: the next
    tick must remove its container."""
    reservation = ReservationFactory(
        host=second_host, user=UserFactory(username="m11007s09"), gpus=[second_host.gpus.get()], **window
    )
    reconcile(host_id=second_host.pk, wake=False)
    reservation.refresh_from_db()
    assert reservation.status == Status.RUNNING
    reservation_release(reservation=reservation)
    return reservation


@pytest.fixture
def neighbour(booking):
    """A second due reservation on the booking's host, after it in the tick's order."""
    return ReservationFactory(
        host=booking.host,
        user=UserFactory(username="m11007s07"),
        gpus=[booking.host.gpus.get(index=0)],
        start=booking.start + timedelta(seconds=1),
        end=booking.end,
    )


def assert_the_rest_converged(*, neighbour, released):
    neighbour.refresh_from_db()
    assert neighbour.status == Status.RUNNING
    assert engine(released).containers == {}


def test_a_start_command_that_cannot_be_split_fails_only_its_reservation(
    booking, neighbour, released_on_second_host
):
    # Saved before admin validated it, or written straight to the database.
    booking.image.start_command = "python -c 'print(1)"
    booking.image.save()

    reconcile()

    booking.refresh_from_db()
    assert booking.status == Status.FAILED
    assert "ValueError" in booking.status_message
    [error] = events(booking, sign="UnexpectedError")
    assert error.level == "ERROR" and error.reservation == booking
    assert "ValueError" in error.message and "No closing quotation" in error.message
    assert_the_rest_converged(neighbour=neighbour, released=released_on_second_host)


def test_a_full_disk_during_one_launch_is_retried_a_bounded_number_of_times(
    booking, neighbour, released_on_second_host, monkeypatch, settings
):
    settings.CONTAINER_MAX_RESTARTS = 2
    real_prepare_mounts = lifecycle.prepare_mounts

    def disk_full_for_booking(reservation):
        if reservation.pk == booking.pk:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_prepare_mounts(reservation)

    monkeypatch.setattr(lifecycle, "prepare_mounts", disk_full_for_booking)

    reconcile()

    booking.refresh_from_db()
    assert booking.status == Status.STARTING
    [error] = events(booking, sign="UnexpectedError")
    assert "OSError" in error.message and "No space left on device" in error.message
    assert "trying again next tick (1 of 2)" in error.message
    assert_the_rest_converged(neighbour=neighbour, released=released_on_second_host)

    reconcile()
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.FAILED
    assert "No space left on device" in booking.status_message and "tried 3 times" in booking.status_message
    assert not booking.allocations.filter(active=True).exists()


def test_a_mount_point_turned_into_a_file_stops_only_its_reservation(
    booking, neighbour, released_on_second_host, roots
):
    # What a student can do from inside their own container: replace the mount point of
    # their Work folder inside their home by a plain file.
    folder = roots["backup"] / ".aivc-home" / booking.user.username
    folder.mkdir(parents=True)
    (folder / "Work").write_text("not a folder")

    reconcile()

    booking.refresh_from_db()
    assert booking.status != Status.RUNNING
    [error] = ContainerEvent.objects.filter(reservation=booking)
    assert error.level == "ERROR" and ".aivc" in error.message
    assert_the_rest_converged(neighbour=neighbour, released=released_on_second_host)


def test_a_host_whose_tick_crashes_does_not_stop_the_next_host(booking, released_on_second_host, monkeypatch):
    crashing_host = booking.host
    real_list_managed = FakeRuntime.list_managed

    def crash_on_first_host(self):
        if self.host.pk == crashing_host.pk:
            raise RuntimeError("unexpected answer")
        return real_list_managed(self)

    monkeypatch.setattr(FakeRuntime, "list_managed", crash_on_first_host)

    summary = reconcile()

    assert engine(released_on_second_host).containers == {}
    assert any("RuntimeError" in error for error in summary.errors)
    [error] = ContainerEvent.objects.filter(host=crashing_host, sign="UnexpectedError")
    assert error.level == "ERROR" and "RuntimeError (unexpected answer)" in error.message
    reconcile()
    assert ContainerEvent.objects.filter(host=crashing_host, sign="UnexpectedError").count() == 1


def test_an_unexpected_error_removing_one_container_does_not_stop_the_others(booking, neighbour, monkeypatch):
    reconcile()
    booking.refresh_from_db()
    Reservation.objects.filter(pk__in=[booking.pk, neighbour.pk]).update(status=Status.CANCELLED)
    real_remove = FakeRuntime.remove
    stuck = booking.container_id

    def fail_for_one(self, container_id):
        if container_id == stuck:
            raise PermissionError("operation not permitted")
        return real_remove(self, container_id)

    monkeypatch.setattr(FakeRuntime, "remove", fail_for_one)

    reconcile()

    assert list(engine(booking).containers) == [stuck]
    [error] = ContainerEvent.objects.filter(host=booking.host, sign="UnexpectedError")
    assert "PermissionError" in error.message


# Host identity: containers are found by the host's primary key, not its editable name ---


def test_renaming_a_host_keeps_its_running_container_adopted(booking):
    reconcile()
    booking.refresh_from_db()
    started = booking.container_id
    booking.host.name = "renamed-in-admin"
    booking.host.save()

    reconcile()

    booking.refresh_from_db()
    assert booking.status == Status.RUNNING and booking.container_id == started
    assert list(engine(booking).containers) == [started]
    assert not ContainerEvent.objects.filter(level__in=["WARNING", "ERROR"]).exists()


def test_a_release_after_a_rename_still_removes_the_container(booking):
    reconcile()
    booking.host.name = "renamed-in-admin"
    booking.host.save()
    booking.refresh_from_db()
    reservation_release(reservation=booking)

    reconcile()

    assert engine(booking).containers == {}


def test_a_container_labelled_before_host_ids_is_still_found_by_the_host_name(booking):
    reconcile()
    fake = engine(booking)
    [(container_id, (state, spec))] = fake.containers.items()
    legacy_labels = {key: value for key, value in state.labels.items() if key != LABEL_HOST_ID}
    fake.containers[container_id] = (replace(state, labels=legacy_labels), spec)
    booking.refresh_from_db()
    reservation_release(reservation=booking)

    reconcile()

    assert fake.containers == {}


def test_a_container_of_another_host_on_the_same_engine_is_never_touched(booking, second_host):
    reconcile()
    FakeRuntime.engine_for(second_host).containers.update(engine(booking).containers)
    Reservation.objects.filter(pk=booking.pk).update(status=Status.CANCELLED)

    reconcile(host_id=second_host.pk)

    assert len(FakeRuntime.engine_for(second_host).containers) == 1


# Lower items -----------------------------------------------------------------------------


def test_a_reservation_still_starting_when_its_window_passes_is_failed_not_ended(booking):
    now = timezone.now()
    Reservation.objects.filter(pk=booking.pk).update(
        status=Status.STARTING, start=now - timedelta(hours=2), end=now - timedelta(seconds=1)
    )

    reconcile()

    booking.refresh_from_db()
    assert booking.status == Status.FAILED
    assert "never started" in booking.status_message
    assert events(booking, sign="NeverStarted")
    assert not booking.allocations.filter(active=True).exists()


def test_an_image_withdrawn_after_the_booking_does_not_launch_and_the_student_is_told(booking):
    booking.image.is_active = False
    booking.image.save()

    reconcile()

    booking.refresh_from_db()
    assert booking.status == Status.FAILED
    assert "lab/aivc-server:latest has been withdrawn by the maintainers" in booking.status_message
    assert "book again with another image" in booking.status_message
    [error] = events(booking, sign="ImageInactive")
    assert error.level == "ERROR"
    assert engine(booking).runs == []


def test_a_running_container_keeps_running_when_its_image_is_withdrawn(booking):
    reconcile()
    booking.image.is_active = False
    booking.image.save()

    reconcile()

    booking.refresh_from_db()
    assert booking.status == Status.RUNNING
    assert len(engine(booking).containers) == 1


def test_a_hand_over_launches_before_removing_containers_not_in_its_way(booking, monkeypatch):
    host = booking.host
    gpu0, gpu1 = host.gpus.get(index=0), host.gpus.get(index=1)
    now = timezone.now()
    ending = {}
    for name, gpu in (("ending-on-1", gpu1), ("ending-on-0", gpu0)):
        ending[name] = ReservationFactory(
            # Their GPUs are held until the due booking's start (its window began a minute ago).
            user=UserFactory(username=name),
            host=host,
            gpus=[gpu],
            start=now - timedelta(hours=1),
            end=booking.start,
        )
    # Only the due booking (GPU 1) is in the window; start the two that end now first.
    Reservation.objects.filter(pk=booking.pk).update(start=now + timedelta(minutes=30))
    Reservation.objects.filter(pk__in=[r.pk for r in ending.values()]).update(end=now + timedelta(hours=1))
    reconcile()
    Reservation.objects.filter(pk__in=[r.pk for r in ending.values()]).update(end=now - timedelta(seconds=1))
    Reservation.objects.filter(pk=booking.pk).update(start=now - timedelta(minutes=1))
    calls = []
    run, remove = FakeRuntime.run, FakeRuntime.remove

    def run_logged(self, spec):
        calls.append(("run", spec.name))
        return run(self, spec)

    def remove_logged(self, container_id):
        state, _spec = self.engine.containers[container_id]
        calls.append(("remove", state.name))
        return remove(self, container_id)

    monkeypatch.setattr(FakeRuntime, "run", run_logged)
    monkeypatch.setattr(FakeRuntime, "remove", remove_logged)
    reconcile()
    # The container on the due booking's GPU goes first (the engine frees the GPU before
    # the next starts on it); the one on the other GPU waits until the launch is done.
    assert calls == [
        ("remove", "aivc-ending-on-1"),
        ("run", "aivc-m11007s05"),
        ("remove", "aivc-ending-on-0"),
    ]
