"""Two waitlist tries at once, or a try racing a withdraw, never book a request twice or
book a withdrawn one: the request's row lock decides (real threads; PostgreSQL's row locks)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection

from bookings.models import Reservation, WaitlistEntry
from bookings.waitlist_services import waitlist_join, waitlist_try, waitlist_withdraw
from tests.factories import CapabilityProfileFactory, HostFactory, ImageFactory, UserFactory, local

NOW = local(2026, 3, 2, 10, 10)
START = local(2026, 3, 2, 12)

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")


def _waiting_request() -> WaitlistEntry:
    CapabilityProfileFactory(is_default=True, cpus=2, memory_gb=4, gpus=1)
    ImageFactory(is_default=True)
    host = HostFactory(cpus=64, ram_gb=256, gpus=1)
    return waitlist_join(
        user=UserFactory(),
        host=host,
        start=START,
        end=START + timedelta(hours=2),
        cpus=1,
        memory_gb=1,
        gpu_count=1,
        now=NOW,
    )


def _in_threads(*work) -> list[str]:
    barrier = threading.Barrier(len(work))
    outcomes, lock = [], threading.Lock()

    def run(job) -> None:
        barrier.wait()
        try:
            outcome = job()
        except Exception as error:  # recorded so the test fails with the cause
            outcome = f"crashed: {error!r}"
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_tries_at_once_book_a_request_once():
    entry = _waiting_request()

    def attempt() -> str:
        return "booked" if waitlist_try(entry=entry, now=NOW) is not None else "nothing"

    outcomes = _in_threads(attempt, attempt, attempt)

    assert sorted(outcomes) == ["booked", "nothing", "nothing"]
    assert Reservation.objects.count() == 1
    entry.refresh_from_db()
    assert entry.status == WaitlistEntry.Status.BOOKED


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_withdraw_racing_a_try_leaves_it_either_booked_or_withdrawn_never_both():
    entry = _waiting_request()

    def attempt() -> str:
        return "booked" if waitlist_try(entry=entry, now=NOW) is not None else "nothing"

    def withdraw() -> str:
        try:
            waitlist_withdraw(entry=entry, now=NOW)
        except Exception as error:
            return f"refused: {error}"
        return "withdrawn"

    outcomes = _in_threads(attempt, withdraw)

    entry.refresh_from_db()
    booked = Reservation.objects.count()
    if entry.status == WaitlistEntry.Status.BOOKED:
        assert booked == 1 and "booked" in outcomes
    else:
        assert entry.status == WaitlistEntry.Status.WITHDRAWN and booked == 0
        assert sorted(outcomes) == ["nothing", "withdrawn"]
