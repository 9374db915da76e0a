import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts.models import ApiToken
from accounts.token_services import api_token_authenticate, api_token_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_token_made_on_the_profile_page_is_shown_once_and_works(client, student):
    client.force_login(student)
    response = client.post(
        reverse("profile"),
        {
            "action": "token-create",
            "token-name": "laptop",
            "token-expires_in_days": "30",
            "token-scope": "book",
        },
    )
    assert response.status_code == 200
    raw = response.context["new_token"]
    assert raw.encode() in response.content
    assert api_token_authenticate(raw=raw).name == "laptop"
    assert raw.encode() not in client.get(reverse("profile")).content


def test_a_token_needs_a_name(client, student):
    client.force_login(student)
    response = client.post(reverse("profile"), {"action": "token-create", "token-name": ""})
    assert response.context["new_token"] is None and response.context["token_form"].errors
    assert not ApiToken.objects.exists()


def test_the_owner_revokes_a_token_and_no_one_else_can(client, student):
    token, raw = api_token_create(user=student, name="old")
    intruder = UserFactory(username="intruder")
    client.force_login(intruder)
    assert client.post(reverse("profile"), {"action": "token-revoke", "token": token.pk}).status_code == 404
    assert api_token_authenticate(raw=raw) is not None
    client.force_login(student)
    assert client.post(reverse("profile"), {"action": "token-revoke", "token": token.pk}).status_code == 302
    assert api_token_authenticate(raw=raw) is None


def test_a_maintainer_revokes_any_token_in_admin(client, student):
    _token, raw = api_token_create(user=student, name="leaked")
    admin_user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [ApiToken.objects.get().pk]},
    )
    assert response.status_code == 302
    assert api_token_authenticate(raw=raw) is None
    assert b"key_hash" not in client.get(reverse("admin:accounts_apitoken_change", args=[_token.pk])).content


def test_staff_who_may_only_view_tokens_cannot_revoke_one(client, student):
    token, raw = api_token_create(user=student, name="in use")
    viewer = UserFactory(username="helpdesk", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    client.force_login(viewer)
    client.post(
        reverse("admin:accounts_apitoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert api_token_authenticate(raw=raw) is not None


def test_the_profile_saves_which_notifications_go_by_email(client, student):
    client.force_login(student)
    response = client.post(
        reverse("profile"), {"action": "email-kinds", "email-email_kinds": ["running", "job_finished"]}
    )
    assert response.status_code == 302
    assert student.channels.email_kinds == ["running", "job_finished"]
