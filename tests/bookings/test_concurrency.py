"""The database, not only Python, guards the last GPU: real threads on PostgreSQL."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from bookings.models import GpuAllocation, Reservation
from bookings.services import reservation_create
from tests.factories import (
    CapabilityProfileFactory,
    HostFactory,
    ImageFactory,
    ReservationFactory,
    UserFactory,
    local,
)

NOW = local(2026, 3, 2, 10, 10)
START = local(2026, 3, 2, 12)

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="exclusion constraints exist on PostgreSQL only"
)


@pytest.mark.django_db(transaction=True)
def test_twenty_threads_racing_for_the_last_gpu_give_it_to_exactly_one():
    CapabilityProfileFactory(is_default=True, cpus=2, memory_gb=4, gpus=1)
    ImageFactory(is_default=True)
    host = HostFactory(cpus=64, ram_gb=256, gpus=1)
    users = [UserFactory() for _ in range(20)]
    barrier = threading.Barrier(len(users))
    outcomes: list[str] = []
    lock = threading.Lock()

    def race(user) -> None:
        barrier.wait()
        try:
            reservation_create(
                user=user,
                host=host,
                start=START,
                end=START + timedelta(hours=2),
                cpus=1,
                memory_gb=1,
                gpu_count=1,
                now=NOW,
            )
            outcome = "won"
        except ValidationError as error:
            outcome = " ".join(error.messages)
        except Exception as error:  # recorded so the test fails with the cause
            outcome = f"crashed: {error!r}"
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outcomes) == len(users), "a thread ended with an unexpected error"
    assert outcomes.count("won") == 1
    assert all("not enough computing power" in outcome for outcome in outcomes if outcome != "won")
    assert GpuAllocation.objects.filter(active=True).count() == 1


@postgres_only
@pytest.mark.django_db
def test_the_database_refuses_a_direct_insert_of_an_overlapping_allocation():
    host = HostFactory(gpus=1)
    gpu = host.gpus.get()
    first = ReservationFactory(host=host, start=START, end=START + timedelta(hours=2), gpus=[gpu])
    second = ReservationFactory(host=host, start=START + timedelta(hours=1), end=START + timedelta(hours=3))
    with pytest.raises(IntegrityError, match="allocation_gpu_no_overlap"), transaction.atomic():
        GpuAllocation.objects.create(reservation=second, gpu=gpu, start=second.start, end=second.end)
    assert first.allocations.count() == 1


@postgres_only
@pytest.mark.django_db
def test_the_database_allows_back_to_back_and_inactive_allocations_of_one_gpu():
    host = HostFactory(gpus=1)
    gpu = host.gpus.get()
    ReservationFactory(host=host, start=START, end=START + timedelta(hours=2), gpus=[gpu])
    after = ReservationFactory(host=host, start=START + timedelta(hours=2), end=START + timedelta(hours=3))
    GpuAllocation.objects.create(reservation=after, gpu=gpu, start=after.start, end=after.end)
    cancelled = ReservationFactory(host=host, start=START, end=START + timedelta(hours=3))
    GpuAllocation.objects.create(reservation=cancelled, gpu=gpu, start=START, end=cancelled.end, active=False)
    assert GpuAllocation.objects.filter(gpu=gpu).count() == 3


@postgres_only
@pytest.mark.django_db
def test_the_database_refuses_two_live_reservations_of_one_user_at_once():
    user = UserFactory()
    ReservationFactory(user=user, start=START, end=START + timedelta(hours=2))
    with pytest.raises(IntegrityError, match="reservation_user_no_overlap"), transaction.atomic():
        ReservationFactory(user=user, start=START + timedelta(hours=1), end=START + timedelta(hours=3))
    cancelled = ReservationFactory(
        user=user, start=START, end=START + timedelta(hours=2), status=Reservation.Status.CANCELLED
    )
    assert cancelled.pk
