"""A tick launches a host's due reservations as one batch: the database hears about all of
them at once, guarded by the statuses they may come from, and one user's block or failure
stays theirs."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bookings.models import Reservation
from containers import lifecycle, pool, selectors, services
from containers.fake_runtime import FakeRuntime
from containers.lifecycle import reconcile
from containers.models import ContainerEvent
from tests.containers.helpers import SpaceAuditFactory
from tests.factories import ImageFactory, ReservationFactory, UserFactory

Status = Reservation.Status


@pytest.fixture
def due(engine_host, fake_runtime, default_profile, window):
    image = ImageFactory(reference="lab/aivc-server:latest")

    def make(count: int) -> list[Reservation]:
        return [
            ReservationFactory(user=UserFactory(), host=engine_host, image=image, **window)
            for _ in range(count)
        ]

    return make


def launching_tick_queries() -> int:
    with CaptureQueriesContext(connection) as queries:
        reconcile(wake=False)
    return len(queries)


def test_a_launching_tick_asks_the_database_as_often_for_twelve_starts_as_for_three(
    due, fake_runtime, monkeypatch
):
    monkeypatch.setattr(pool, "FLUSH_EVERY_S", 3600)  # one batch of "running" per tick, however slow
    due(3)
    few = launching_tick_queries()
    Reservation.objects.update(status=Status.ENDED)
    reconcile(wake=False)  # removes the three
    due(12)
    many = launching_tick_queries()
    assert Reservation.objects.filter(status=Status.RUNNING).count() == 12
    assert many == few


def test_each_started_reservation_gets_its_own_container_and_one_started_event(due):
    reservations = due(4)
    report = reconcile(wake=False)
    assert sorted(report.started) == sorted(r.pk for r in reservations)
    rows = Reservation.objects.filter(pk__in=report.started)
    assert len({row.container_id for row in rows}) == 4
    assert all(row.started_at is not None and row.status == Status.RUNNING for row in rows)
    for reservation in reservations:
        [event] = ContainerEvent.objects.filter(reservation=reservation)
        assert event.user == reservation.user and reservation.user.username in event.message


def test_a_batch_move_leaves_a_reservation_cancelled_meanwhile_cancelled_and_moves_the_others(due):
    first, cancelled, third = due(3)  # these objects still say scheduled
    Reservation.objects.filter(pk=cancelled.pk).update(status=Status.CANCELLED)

    moved = services.reservations_mark_starting(reservations=[first, cancelled, third])

    assert moved == [first, third]
    assert cancelled.status == Status.SCHEDULED  # the object was not touched either
    statuses = dict(Reservation.objects.values_list("pk", "status"))
    assert statuses == {first.pk: Status.STARTING, cancelled.pk: Status.CANCELLED, third.pk: Status.STARTING}


def test_a_batch_move_to_running_keeps_a_first_start_time(due):
    earlier = timezone.now() - timedelta(minutes=20)
    restarted, fresh = due(2)
    Reservation.objects.filter(pk=restarted.pk).update(status=Status.STARTING, started_at=earlier)
    restarted.refresh_from_db()
    now = timezone.now()

    services.reservations_mark_running(containers=[(restarted, "c1"), (fresh, "c2")], now=now)

    rows = {row.pk: row for row in Reservation.objects.all()}
    assert (rows[restarted.pk].container_id, rows[restarted.pk].started_at) == ("c1", earlier)
    assert (rows[fresh.pk].container_id, rows[fresh.pk].started_at) == ("c2", now)
    assert (fresh.container_id, fresh.status) == ("c2", Status.RUNNING)


def test_a_batch_move_stores_start_times_as_any_other_write_does(due):
    # Found by lookups, not only read back: on SQLite a datetime in the driver's own text
    # format reads back alike but no longer equals the same instant written by Django.
    first, second = due(2)
    now = timezone.now()

    services.reservations_mark_running(containers=[(first, "c1"), (second, "c2")], now=now)

    assert Reservation.objects.filter(started_at=now).count() == 2
    assert Reservation.objects.filter(started_at__lte=now, started_at__gte=now).count() == 2


def test_the_space_verdict_of_each_user_is_their_latest_deciding_audit(engine_host):
    now = timezone.now()
    under, over, unknown = UserFactory(), UserFactory(), UserFactory()
    audit = {"host": engine_host, "work_gb": 1, "backup_gb": 1}
    deciding = SpaceAuditFactory(
        user=under, complete=True, over_quota=False, measured_at=now - timedelta(hours=1), **audit
    )
    # A timed-out measurement under quota decides nothing: the complete one before it stands.
    SpaceAuditFactory(user=under, complete=False, over_quota=False, measured_at=now, **audit)
    SpaceAuditFactory(
        user=over, complete=True, over_quota=False, measured_at=now - timedelta(hours=1), **audit
    )
    latest_over = SpaceAuditFactory(user=over, complete=False, over_quota=True, measured_at=now, **audit)
    SpaceAuditFactory(user=unknown, complete=False, over_quota=False, measured_at=now, **audit)

    verdicts = selectors.space_verdicts(user_ids=[under.pk, over.pk, unknown.pk], host=engine_host)

    assert verdicts == {under.pk: deciding, over.pk: latest_over}


def test_one_user_over_quota_is_blocked_while_the_others_on_the_host_launch(due, engine_host):
    blocked, *others = due(3)
    SpaceAuditFactory(
        user=blocked.user,
        host=engine_host,
        work_gb=900,
        backup_gb=1,
        complete=True,
        over_quota=True,
        measured_at=timezone.now(),
    )

    report = reconcile(wake=False)

    assert report.blocked == [blocked.pk]
    assert sorted(report.started) == sorted(r.pk for r in others)
    blocked.refresh_from_db()
    assert blocked.status == Status.BLOCKED and "900 GB" in blocked.status_message


def test_launches_are_marked_running_in_batches_while_the_others_still_launch(due, monkeypatch):
    monkeypatch.setattr(pool, "FLUSH_EVERY_S", 0)  # every launch's end is a flush
    reservations = due(3)
    seen_running = []
    original_run = FakeRuntime.run

    def run(self, spec):
        seen_running.append(Reservation.objects.filter(status=Status.RUNNING).count())
        return original_run(self, spec)

    monkeypatch.setattr(FakeRuntime, "run", run)
    reconcile(wake=False)
    assert seen_running == [0, 1, 2]
    assert Reservation.objects.filter(pk__in=[r.pk for r in reservations], status=Status.RUNNING).count() == 3


def test_an_error_recording_one_started_container_fails_only_its_reservation(due, monkeypatch):
    poisoned, *others = due(3)
    original_started = lifecycle.events.started

    def started(**fields):
        if fields["username"] == poisoned.user.username:
            raise ValueError("unprintable")
        return original_started(**fields)

    monkeypatch.setattr(lifecycle.events, "started", started)
    report = reconcile(wake=False)

    assert sorted(report.started) == sorted(r.pk for r in others)
    poisoned.refresh_from_db()
    assert poisoned.status == Status.FAILED and "unprintable" in poisoned.status_message
    for reservation in others:
        reservation.refresh_from_db()
        assert reservation.status == Status.RUNNING
        assert ContainerEvent.objects.filter(reservation=reservation, sign="").count() == 1
