"""Jobs and bookings share one GPU exclusion constraint, and scheduling passes that run at
once start each job once: real threads on PostgreSQL."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction

from bookings.models import GpuAllocation, Reservation
from bookings.services import reservation_create
from containers.fake_runtime import FakeRuntime
from containers.tasks import reconcile
from jobs import services
from jobs.models import Job
from jobs.services import job_cancel, job_submit
from jobs.tasks import schedule_jobs
from tests.factories import (
    CapabilityProfileFactory,
    HostFactory,
    ImageFactory,
    ReservationFactory,
    UserFactory,
    local,
)

NOW = local(2026, 3, 2, 10, 10)

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="exclusion constraints exist on PostgreSQL only"
)


@postgres_only
@pytest.mark.django_db
def test_the_database_refuses_a_booking_on_a_gpu_a_job_holds():
    host = HostFactory(gpus=1)
    gpu = host.gpus.get()
    job_hold = ReservationFactory(
        host=host, kind=Reservation.Kind.JOB, start=NOW, end=NOW + timedelta(hours=2), gpus=[gpu]
    )
    booking = ReservationFactory(host=host, start=NOW + timedelta(hours=1), end=NOW + timedelta(hours=3))
    with pytest.raises(IntegrityError), transaction.atomic():
        GpuAllocation.objects.create(reservation=booking, gpu=gpu, start=booking.start, end=booking.end)
    assert job_hold.allocations.count() == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_passes_and_bookings_racing_for_one_gpu_give_it_to_exactly_one():
    CapabilityProfileFactory(is_default=True, cpus=2, memory_gb=4, gpus=1)
    ImageFactory(is_default=True)
    host = HostFactory(cpus=64, ram_gb=256, gpus=1)
    job = job_submit(
        user=UserFactory(),
        command="python train.py",
        cpus=1,
        memory_gb=1,
        gpu_count=1,
        time_limit_minutes=120,
        now=NOW,
    )
    bookers = [UserFactory() for _ in range(3)]
    barrier = threading.Barrier(6)
    errors: list[str] = []

    def schedule() -> None:
        barrier.wait()
        try:
            schedule_jobs(now=NOW)
        except Exception as error:
            errors.append(repr(error))
        finally:
            connection.close()

    def booking(user) -> None:
        barrier.wait()
        try:
            reservation_create(
                user=user, host=host, start="now", end="1-day", cpus=1, memory_gb=1, gpu_count=1, now=NOW
            )
        except Exception as error:
            if "not enough computing power" not in str(error):
                errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=schedule) for _ in range(3)]
    threads += [threading.Thread(target=booking, args=(user,)) for user in bookers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    holders = Reservation.objects.live().filter(host=host, gpu_count=1)
    assert holders.count() == 1
    job.refresh_from_db()
    assert (job.status == Job.Status.STARTING) == (holders.get().kind == Reservation.Kind.JOB)


def _wait_until_blocked_on_a_lock(timeout_s: float = 10) -> None:
    """Returns once another connection waits for a row lock (the cancel, queued behind the
    scheduler's locked read)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.01)
    raise AssertionError("the cancel never waited for the scheduler's lock")


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_while_the_scheduler_starts_it_holds_nothing(monkeypatch, settings):
    """The scheduler has locked the queued job and is about to write its start; the owner
    cancels meanwhile, and the cancel waits for the lock. Once the start is written the
    cancel goes on: the job ends cancelled and its reservation holds no CPUs or memory at
    once; its GPUs, which a starting container may already use, only until the next tick
    finds no container (test_job_lifecycle: a cancelled job's GPUs and its container)."""
    settings.CONTAINER_RUNTIME = "containers.fake_runtime.FakeRuntime"
    FakeRuntime.reset()
    CapabilityProfileFactory(is_default=True, cpus=2, memory_gb=4, gpus=1)
    ImageFactory(is_default=True)
    host = HostFactory(cpus=64, ram_gb=256, gpus=1)
    job = job_submit(
        user=UserFactory(),
        command="python train.py",
        cpus=1,
        memory_gb=1,
        gpu_count=1,
        time_limit_minutes=120,
        now=NOW,
    )
    locked, go = threading.Event(), threading.Event()
    write_starts = services._write_starts

    def paused_write(**kwargs) -> None:
        locked.set()
        go.wait(10)
        write_starts(**kwargs)

    monkeypatch.setattr(services, "_write_starts", paused_write)
    errors: list[str] = []

    def in_thread(work) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except Exception as error:
                errors.append(repr(error))
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    scheduler = in_thread(lambda: schedule_jobs(now=NOW))
    assert locked.wait(10)
    cancel = in_thread(lambda: job_cancel(job=job, now=NOW + timedelta(minutes=1)))
    _wait_until_blocked_on_a_lock()
    go.set()
    scheduler.join(10)
    cancel.join(10)
    assert errors == []
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job.reservation is not None  # the start was written, then cancelled
    assert not Reservation.objects.live().filter(host=host).exists()
    held_gpus = GpuAllocation.objects.filter(active=True, end__gt=NOW + timedelta(minutes=1))
    assert held_gpus.exists()  # until the tick has seen that no container runs on them
    reconcile(wake=False)
    assert not held_gpus.exists()
