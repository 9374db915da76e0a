"""Personal access tokens as someone who found one would use it: it expires, it dies with a
password change or a deactivation, it cannot mint more tokens or plant an SSH key, a read
token cannot book, and its owner sees when and from where it was last used."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import user_reset_password, user_update_lab_settings
from accounts.token_services import MAX_TOKENS_PER_USER, api_token_authenticate, api_token_create
from tests.accounts.test_profile_services import ED25519

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"


def bearer(raw: str, address: str = "203.0.113.9") -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_token_made_without_an_expiry_expires_after_the_default_days(student, settings):
    settings.API_TOKEN_DEFAULT_DAYS = 90
    now = timezone.now()
    token, raw = api_token_create(user=student, name="forgotten laptop", now=now)
    assert token.expires_at == now + timedelta(days=90)
    assert api_token_authenticate(raw=raw, now=now + timedelta(days=89)) is not None
    assert api_token_authenticate(raw=raw, now=now + timedelta(days=91)) is None


def test_aivc_login_and_the_profile_page_make_tokens_that_expire(client, student, settings):
    made = APIClient().post(
        reverse("api-login"), {"username": student.username, "password": PASSWORD}, format="json"
    )
    assert made.status_code == 201 and made.json()["expires_at"] is not None
    client.force_login(student)
    client.post(
        reverse("profile"),
        {
            "action": "token-create",
            "token-name": "page",
            "token-expires_in_days": "90",
            "token-scope": "book",
        },
    )
    assert not ApiToken.objects.filter(expires_at__isnull=True).exists()
    assert ApiToken.objects.count() == 2


def test_a_leaked_token_dies_when_its_owner_changes_her_password(client, student):
    _token, raw = api_token_create(user=student, name="leaked")
    client.force_login(student)
    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": "a-new-Pass-2026!", "new_password2": "a-new-Pass-2026!"},
    )
    assert response.status_code == 302
    assert bearer(raw).get("/api/v1/profile/").status_code == 401


def test_a_maintainers_password_reset_kills_the_accounts_tokens(student):
    _token, raw = api_token_create(user=student, name="leaked")
    user_reset_password(user=student)
    assert api_token_authenticate(raw=raw) is None


def test_a_token_of_a_deactivated_account_stays_dead_after_reactivation(student):
    _token, raw = api_token_create(user=student, name="leaked")
    user_update_lab_settings(user=student, is_active=False)
    user_update_lab_settings(user=student, is_active=True)
    assert api_token_authenticate(raw=raw) is None
    assert bearer(raw).get("/api/v1/profile/").status_code == 401


def test_a_login_does_not_revoke_tokens(client, student):
    _token, raw = api_token_create(user=student, name="cluster")
    client.post(reverse("login"), {"username": student.username, "password": PASSWORD})
    assert bearer(raw).get("/api/v1/profile/").status_code == 200


def test_a_leaked_token_cannot_mint_a_new_token_or_list_them(student):
    _token, raw = api_token_create(user=student, name="leaked")
    attacker = bearer(raw)
    minted = attacker.post("/api/v1/tokens/", {"name": "persistence"}, format="json")
    assert minted.status_code == 403
    assert "browser session" in minted.json()["detail"]
    assert attacker.get("/api/v1/tokens/").status_code == 403
    assert ApiToken.objects.filter(user=student).count() == 1


def test_a_leaked_token_cannot_revoke_the_owners_other_tokens_but_can_end_itself(student):
    leaked, raw = api_token_create(user=student, name="leaked")
    other, _other_raw = api_token_create(user=student, name="cluster")
    attacker = bearer(raw)
    assert attacker.delete(f"/api/v1/tokens/{other.pk}/").status_code == 403
    other.refresh_from_db()
    assert other.revoked_at is None
    # `aivc logout` revokes the token it holds.
    assert attacker.delete(f"/api/v1/tokens/{leaked.pk}/").status_code == 204
    assert api_token_authenticate(raw=raw) is None


def test_a_leaked_token_cannot_plant_an_ssh_key(student):
    _token, raw = api_token_create(user=student, name="leaked")
    response = bearer(raw).patch("/api/v1/profile/", {"ssh_public_keys": ED25519}, format="json")
    assert response.status_code == 403
    student.refresh_from_db()
    assert student.ssh_public_keys == ""
    # Other profile settings still work with a token.
    assert (
        bearer(raw).patch("/api/v1/profile/", {"default_extra_command": "--x 1"}, format="json").status_code
        == 200
    )


def test_the_owner_changes_her_keys_from_a_logged_in_session(student):
    session = APIClient()
    session.force_login(student)
    assert session.patch("/api/v1/profile/", {"ssh_public_keys": ED25519}, format="json").status_code == 200


def test_a_read_token_reads_but_cannot_book_or_change_anything(student, host):
    _token, raw = api_token_create(user=student, name="dashboard", scope=ApiToken.Scope.READ)
    reader = bearer(raw)
    assert reader.get("/api/v1/reservations/").status_code == 200
    booked = reader.post(
        "/api/v1/reservations/",
        {"host": host.name, "start": "now", "end": "1-day", "cpus": 1, "memory_gb": 1, "gpu_count": 0},
        format="json",
    )
    assert booked.status_code == 403
    assert "only read" in booked.json()["detail"]
    assert reader.patch("/api/v1/profile/", {"default_extra_command": "x"}, format="json").status_code == 403
    assert not student.reservations.exists()


def test_the_profile_page_shows_when_and_from_where_each_token_was_last_used(client, student):
    _token, raw = api_token_create(user=student, name="cluster")
    assert bearer(raw, address="198.51.100.77").get("/api/v1/profile/").status_code == 200
    client.force_login(student)
    page = client.get(reverse("profile")).content.decode()
    assert "198.51.100.77" in page
    assert ApiToken.objects.get().last_used_from == "198.51.100.77"


def test_a_51st_token_on_the_profile_page_is_a_clear_error_not_a_500(client, student):
    for number in range(MAX_TOKENS_PER_USER):
        api_token_create(user=student, name=f"t{number}")
    client.force_login(student)
    response = client.post(
        reverse("profile"),
        {
            "action": "token-create",
            "token-name": "one more",
            "token-expires_in_days": "30",
            "token-scope": "read",
        },
    )
    assert response.status_code == 200
    assert f"You have {MAX_TOKENS_PER_USER} tokens already" in response.content.decode()
    assert ApiToken.objects.filter(user=student).count() == MAX_TOKENS_PER_USER
