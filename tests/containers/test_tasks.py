"""The scheduler's entry points: stable dotted names, schedules, the reconcile command."""

from django.core.management import call_command
from django_q.models import Schedule

from bookings.models import Reservation
from containers.models import SpaceAudit
from containers.tasks import space_audit, space_audit_user

Status = Reservation.Status


def test_setup_schedules_is_idempotent(db):
    call_command("setup_schedules")
    call_command("setup_schedules")
    names = sorted(Schedule.objects.values_list("name", flat=True))
    assert names == [
        "audit space",
        "book waiting requests",
        "check agents",
        "end limit grants",
        "notify users",
        "prune GPU samples",
        "prune built images",
        "reconcile containers",
        "sample GPUs",
        "schedule jobs",
        "sweep build contexts",
        "sync GPU inventory",
    ]


def test_the_reconcile_command_runs_one_tick(booking):
    call_command("reconcile")
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING


def test_the_space_audit_queues_one_audit_per_user_with_a_reservation_near(booking, monkeypatch):
    queued = []
    monkeypatch.setattr("containers.space.queue_task", lambda name, **kwargs: queued.append((name, kwargs)))
    space_audit()
    assert queued == [
        ("containers.tasks.space_audit_user", {"user_id": booking.user_id, "host_id": booking.host_id})
    ]
    space_audit_user(user_id=booking.user_id, host_id=booking.host_id)
    assert SpaceAudit.objects.filter(user=booking.user, complete=True, over_quota=False).exists()
