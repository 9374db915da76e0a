"""Maintainers answer requests for more in admin, in one step, with a note."""

from datetime import timedelta
from functools import partial

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from accounts.grant_services import limit_request_create
from accounts.models import LimitGrant, LimitKind, LimitRequest, Notification, NotificationKind
from tests.admin_helpers import message_texts, post_action
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:accounts_limitrequest_changelist")
run_action = partial(post_action, changelist=CHANGELIST)


@pytest.fixture
def pending(student):
    return limit_request_create(
        user=student,
        kind=LimitKind.BUDGET,
        gpu_hours_per_week=40,
        until=timezone.localdate() + timedelta(days=10),
        reason="Paper deadline.",
    )


def test_the_approve_action_grants_with_the_note_and_tells_the_student(admin_client, pending, student):
    response = run_action(admin_client, "approve", pending, note="Approved for the paper.")

    pending.refresh_from_db()
    assert pending.status == "approved" and pending.note == "Approved for the paper."
    assert LimitGrant.objects.get(request=pending).gpu_hours_per_week == 40
    assert any("Approved: 1" in text for text in message_texts(response))
    notice = Notification.objects.get(user=student, kind=NotificationKind.LIMIT_ANSWERED)
    assert "Approved for the paper." in notice.body
    assert LogEntry.objects.filter(object_id=str(pending.pk), change_message__contains="Approved").exists()


def test_the_deny_action_grants_nothing_and_tells_the_student(admin_client, pending, student):
    run_action(admin_client, "deny", pending, note="The lab is full this month.")
    pending.refresh_from_db()
    assert pending.status == "denied" and not LimitGrant.objects.exists()
    assert Notification.objects.filter(user=student, kind=NotificationKind.LIMIT_ANSWERED).count() == 1


def test_answering_an_answered_request_is_a_message_not_a_second_answer(admin_client, pending, student):
    run_action(admin_client, "approve", pending)
    response = run_action(admin_client, "deny", pending, note="changed my mind")
    assert any("approved already" in text for text in message_texts(response))
    pending.refresh_from_db()
    assert pending.status == "approved"
    assert Notification.objects.filter(user=student).count() == 1


def test_the_change_form_approves_in_one_step_with_the_note_typed_there(admin_client, pending, student):
    url = reverse("admin:accounts_limitrequest_change", args=[pending.pk])
    page = admin_client.get(url)
    assert b'name="_approve"' in page.content and b'name="_deny"' in page.content

    response = admin_client.post(url, {"note": "Yes, until the deadline.", "_approve": "Approve"})

    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == "approved" and pending.note == "Yes, until the deadline."
    assert LimitGrant.objects.filter(request=pending).exists()
    # Answered: the form is read-only history, without the buttons.
    assert b'name="_approve"' not in admin_client.get(url).content


def test_the_change_form_denies_in_one_step(admin_client, pending):
    url = reverse("admin:accounts_limitrequest_change", args=[pending.pk])
    admin_client.post(url, {"note": "Not this term.", "_deny": "Deny"})
    pending.refresh_from_db()
    assert pending.status == "denied" and pending.note == "Not this term."


def test_staff_who_may_only_view_cannot_answer(client, pending):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_limitrequest"))
    client.force_login(viewer)
    url = reverse("admin:accounts_limitrequest_change", args=[pending.pk])
    client.post(url, {"note": "sneaky", "_approve": "Approve"})
    run_action(client, "approve", pending)
    pending.refresh_from_db()
    assert pending.status == "pending" and not LimitGrant.objects.exists()


def test_a_maintainer_ends_a_grant_early(admin_client, pending):
    run_action(admin_client, "approve", pending)
    grant = LimitGrant.objects.get()
    post_action(admin_client, "end_now", grant, changelist=reverse("admin:accounts_limitgrant_changelist"))
    grant.refresh_from_db()
    assert grant.ends_at <= timezone.now()


def test_the_admin_lists_load(admin_client, pending):
    assert admin_client.get(CHANGELIST).status_code == 200
    assert admin_client.get(reverse("admin:accounts_limitgrant_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:bookings_waitlistentry_changelist")).status_code == 200
    assert LimitRequest.objects.count() == 1
