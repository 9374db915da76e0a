"""The audit trail: every admin action that changes a reservation, job, user, profile, host or
image leaves Django admin history naming the maintainer, and what touches a student's
reservation or job also appears in the student's event log, with who did it."""

from functools import partial

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken
from accounts.token_services import api_token_create
from bookings.models import Reservation
from bookings.selectors import recent_events_for_user
from containers.models import ContainerEvent, Image
from jobs.models import HostDrain, Job, QueueState
from tests.admin_helpers import post_action, slot
from tests.factories import (
    CapabilityProfileFactory,
    ImageFactory,
    JobFactory,
    ReservationFactory,
    UserFactory,
)

reservation_action = partial(post_action, changelist=reverse("admin:bookings_reservation_changelist"))


@pytest.fixture
def alice(db):
    """A maintainer: staff with the change permissions, not a superuser."""
    user = UserFactory(username="alice", is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    return user


@pytest.fixture
def maintainer(client, alice):
    client.force_login(alice)
    return client


def _history(obj) -> list[tuple[str, int, str]]:
    return [
        (entry.user.username, entry.action_flag, entry.get_change_message())
        for entry in LogEntry.objects.filter(object_id=str(obj.pk), content_type__model=obj._meta.model_name)
    ]


def _student_sees(student) -> list[str]:
    """The event lines on the student's own dashboard."""
    return [event.as_log_line() for event in recent_events_for_user(user_id=student.pk)]


@pytest.mark.django_db
def test_an_admin_cancel_names_the_maintainer_in_history_and_in_the_students_log(maintainer, host, student):
    booked = ReservationFactory(user=student, host=host, start=slot(3), end=slot(6))

    reservation_action(maintainer, "cancel", booked)

    booked.refresh_from_db()
    assert booked.status == Reservation.Status.CANCELLED
    assert _history(booked) == [("alice", CHANGE, "Cancelled.")]
    [line] = _student_sees(student)
    assert (
        f"[WARNING] ChangedByMaintainer, Reservation #{booked.pk} was cancelled by a maintainer (alice)."
        in line
    )
    # The student reads it on the reservation's own page too.
    maintainer.force_login(student)
    page = maintainer.get(reverse("reservation-detail", args=[booked.pk])).content.decode()
    assert "was cancelled by a maintainer (alice)" in page


@pytest.mark.django_db
def test_a_superuser_is_named_as_an_administrator(admin_client, host, student):
    running = ReservationFactory(user=student, host=host, start=slot(-1), end=slot(3), status="running")

    reservation_action(admin_client, "stop_now", running)

    assert _history(running) == [("admin", CHANGE, "Stopped now (released).")]
    assert "was stopped by an administrator (admin)" in _student_sees(student)[0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("action", "status", "extra", "audit", "told"),
    [
        ("start_now", "scheduled", {}, "Started now.", "was moved to start now by a maintainer (alice)"),
        ("restart", "running", {}, "Container restart requested.", "had its container restarted by"),
        (
            "extend",
            "scheduled",
            {"apply": "1", "end": "1-day"},
            "Extended (new end: 1-day).",
            "was extended to",
        ),
    ],
)
def test_other_reservation_actions_are_recorded_and_told(
    maintainer, host, student, action, status, extra, audit, told
):
    start = slot(-1) if status == "running" else slot(3)
    reservation = ReservationFactory(
        user=student, host=host, start=start, end=start + (slot(1) - slot()), status=status
    )

    reservation_action(maintainer, action, reservation, **extra)

    assert _history(reservation) == [("alice", CHANGE, audit)]
    [line] = _student_sees(student)
    assert "[INFO]" in line and told in line


@pytest.mark.django_db
def test_a_refused_action_leaves_no_history_and_tells_the_student_nothing(maintainer, host, student):
    running = ReservationFactory(user=student, host=host, start=slot(-1), end=slot(3), status="running")

    reservation_action(maintainer, "cancel", running)  # a started reservation is released, not cancelled

    assert _history(running) == []
    assert _student_sees(student) == []


@pytest.mark.django_db
def test_draining_a_host_records_the_host_and_each_reservation_it_ended(maintainer, host, student):
    running = ReservationFactory(user=student, host=host, start=slot(-1), end=slot(3), status="running")
    other = UserFactory(username="bob")
    scheduled = ReservationFactory(user=other, host=host, start=slot(4), end=slot(6))

    post_action(maintainer, "drain", host, changelist=reverse("admin:containers_host_changelist"), apply="1")

    assert _history(host) == [("alice", CHANGE, "Drained: locked, 1 stopped, 1 cancelled.")]
    assert _history(running) == [("alice", CHANGE, "Stopped (host drained).")]
    assert _history(scheduled) == [("alice", CHANGE, "Cancelled (host drained).")]
    assert f"was stopped (draining {host.name}) by a maintainer (alice)" in _student_sees(student)[0]
    assert f"was cancelled (draining {host.name}) by a maintainer (alice)" in _student_sees(other)[0]


@pytest.mark.django_db
def test_locking_a_host_is_recorded(maintainer, host):
    changelist = reverse("admin:containers_host_changelist")
    post_action(maintainer, "lock", host, changelist=changelist)
    post_action(maintainer, "unlock", host, changelist=changelist)
    assert _history(host) == [
        ("alice", CHANGE, "Maintenance lock lifted."),
        ("alice", CHANGE, "Maintenance lock on (no new bookings)."),
    ]


@pytest.mark.django_db
def test_an_edit_through_the_admin_form_is_recorded(maintainer, host):
    # Django's own change form already writes history; kept here so it stays so.
    url = reverse("admin:containers_host_change", args=[host.pk])
    form = maintainer.get(url).context["adminform"].form
    data = {
        **{name: value for name, value in form.initial.items() if value is not None},
        "address": "new.lab.example",
    }
    data.update(
        {
            f"{prefix}-{key}": value
            for prefix in ("gpus", "agent", "access")
            for key, value in (("TOTAL_FORMS", "0"), ("INITIAL_FORMS", "0"))
        }
    )
    maintainer.post(url, data)
    assert any(flag == CHANGE and user == "alice" for user, flag, _ in _history(host))


@pytest.mark.django_db
def test_making_an_image_the_default_is_recorded(maintainer, image):
    newer = ImageFactory(reference="lab/aivc-server:v2")
    post_action(maintainer, "make_default", newer, changelist=reverse("admin:containers_image_changelist"))
    assert Image.objects.get(pk=newer.pk).is_default
    assert _history(newer) == [("alice", CHANGE, f"Made the default image instead of {image.reference}.")]


@pytest.mark.django_db
def test_an_admin_job_cancel_is_recorded_and_told(maintainer, student):
    job = JobFactory(user=student, status=Job.Status.QUEUED)

    post_action(maintainer, "cancel", job, changelist=reverse("admin:jobs_job_changelist"))

    assert _history(job) == [("alice", CHANGE, "Cancelled.")]
    line = ContainerEvent.objects.get(user=student).as_log_line()
    assert f"Job #{job.pk} was cancelled by a maintainer (alice)" in line


@pytest.mark.django_db
def test_pausing_and_resuming_the_queue_is_recorded(maintainer):
    maintainer.post(reverse("admin:jobs_job_pause"), {"reason": "driver update"})
    maintainer.post(reverse("admin:jobs_job_resume"))
    state = QueueState.objects.get()
    assert sorted(message for _, _, message in _history(state)) == ["Paused the queue.", "Resumed the queue."]


@pytest.mark.django_db
def test_undraining_a_host_for_jobs_is_recorded(maintainer, alice, host):
    drain = HostDrain.objects.create(host=host, drained_by=alice, drained_since=timezone.now())
    post_action(maintainer, "undrain", drain, changelist=reverse("admin:jobs_hostdrain_changelist"))
    assert [(user, flag) for user, flag, _ in _history(drain)] == [("alice", DELETION)]


@pytest.mark.django_db
def test_account_actions_are_recorded_and_no_password_is_written(maintainer, student):
    changelist = reverse("admin:accounts_user_changelist")
    profile = CapabilityProfileFactory(name="thesis")

    post_action(maintainer, "reset_password", student, changelist=changelist)
    post_action(maintainer, "unlock_login", student, changelist=changelist)
    post_action(
        maintainer, "assign_profile", student, changelist=changelist, apply="1", capability_profile=profile.pk
    )

    assert _history(student) == [
        ("alice", CHANGE, "Assigned the profile thesis."),
        ("alice", CHANGE, "Unlocked login (failed attempts cleared)."),
        ("alice", CHANGE, "Reset the password (one-time, must change at login)."),
    ]


@pytest.mark.django_db
def test_accounts_created_in_bulk_are_recorded_as_additions(maintainer, default_profile):
    maintainer.post(reverse("admin:accounts_user_bulk_create"), {"usernames": "m1 m2"})
    entries = LogEntry.objects.filter(action_flag=ADDITION, user__username="alice")
    assert sorted(entry.object_repr for entry in entries) == ["m1", "m2"]


@pytest.mark.django_db
def test_revoking_a_token_is_recorded(maintainer, student):
    token, _ = api_token_create(user=student, name="laptop")
    post_action(maintainer, "revoke", token, changelist=reverse("admin:accounts_apitoken_changelist"))
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert _history(token) == [("alice", CHANGE, "Revoked.")]


@pytest.mark.django_db
def test_the_whole_history_is_listed_read_only_in_admin(admin_client, maintainer, host):
    post_action(maintainer, "lock", host, changelist=reverse("admin:containers_host_changelist"))
    changelist = admin_client.get(reverse("admin:admin_logentry_changelist"), {"q": "Maintenance"})
    assert changelist.status_code == 200
    assert "Maintenance lock on" in changelist.content.decode()
    entry = LogEntry.objects.get()
    assert (
        admin_client.post(
            reverse("admin:admin_logentry_delete", args=[entry.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert LogEntry.objects.filter(pk=entry.pk).exists()
