from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.token_services import api_token_authenticate, api_token_create, api_token_revoke
from tests.accounts.test_profile_services import ED25519
from tests.api_helpers import assert_error_shape, token_client
from tests.factories import ImageFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_token_is_stored_only_as_a_hash_and_shown_once(student):
    token, raw = api_token_create(user=student, name="laptop")
    assert raw.startswith("aivc_") and len(raw) > 40
    stored = ApiToken.objects.get(pk=token.pk)
    assert raw not in {stored.key_hash, stored.prefix, stored.name}
    assert api_token_authenticate(raw=raw).user == student


def test_a_revoked_expired_or_altered_token_is_refused(student):
    now = timezone.now()
    revoked, revoked_raw = api_token_create(user=student, name="old")
    api_token_revoke(token=revoked)
    _expiring, expiring_raw = api_token_create(
        user=student, name="short", expires_at=now + timedelta(hours=1)
    )
    _token, raw = api_token_create(user=student, name="good")
    assert api_token_authenticate(raw=revoked_raw) is None
    assert api_token_authenticate(raw=expiring_raw, now=now + timedelta(hours=2)) is None
    assert api_token_authenticate(raw=raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None


def test_an_api_request_with_a_revoked_token_answers_401_in_the_error_shape(student):
    client = APIClient()
    token, raw = api_token_create(user=student, name="x")
    api_token_revoke(token=token)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get("/api/v1/profile/")
    assert response.status_code == 401
    assert_error_shape(response.json())


def test_anonymous_requests_get_401(db):
    response = APIClient().get("/api/v1/reservations/")
    assert response.status_code == 401
    assert_error_shape(response.json())


def test_a_token_notes_when_it_was_last_used(student):
    client = token_client(student)
    assert client.get("/api/v1/profile/").status_code == 200
    assert ApiToken.objects.get(user=student).last_used_at is not None


def session_client(user) -> APIClient:
    # SSH keys and tokens are managed from a logged-in session, never with a token.
    client = APIClient()
    client.force_login(user)
    return client


def test_the_profile_reads_and_changes_keys_image_and_command(student):
    other_image = ImageFactory(reference="lab/other:1")
    client = session_client(student)
    response = client.patch(
        "/api/v1/profile/",
        {"ssh_public_keys": ED25519, "default_image": "lab/other:1", "default_extra_command": "--x 1"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    student.refresh_from_db()
    assert student.ssh_public_keys == ED25519 and student.default_image == other_image
    assert response.json()["default_image"] == "lab/other:1"


def test_the_profile_refuses_a_bad_key_with_the_pages_message(student):
    response = session_client(student).patch("/api/v1/profile/", {"ssh_public_keys": "hello"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert_error_shape(body)
    assert "Line 1 is not an OpenSSH public key" in body["errors"]["ssh_public_keys"][0]


def test_the_profile_refuses_an_inactive_image(student):
    ImageFactory(reference="lab/retired:1", is_active=False)
    response = token_client(student).patch(
        "/api/v1/profile/", {"default_image": "lab/retired:1"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"]["default_image"] == ["Not the available image!"]


def test_tokens_are_listed_without_secrets_and_revoked_by_their_owner_only(student):
    client = session_client(student)
    made = client.post("/api/v1/tokens/", {"name": "cluster"}, format="json")
    assert made.status_code == 201
    raw = made.json()["token"]
    listed = client.get("/api/v1/tokens/").json()
    assert raw not in str(listed)
    other = session_client(UserFactory(username="intruder"))
    assert other.delete(f"/api/v1/tokens/{made.json()['id']}/").status_code == 404
    assert client.delete(f"/api/v1/tokens/{made.json()['id']}/").status_code == 204
    assert ApiToken.objects.get(pk=made.json()["id"]).revoked_at is not None


def test_a_password_login_makes_a_token_and_a_wrong_password_does_not(student):
    client = APIClient()
    wrong = client.post(
        "/api/v1/auth/token/", {"username": student.username, "password": "nope"}, format="json"
    )
    assert wrong.status_code == 401
    assert_error_shape(wrong.json())
    right = client.post(
        "/api/v1/auth/token/",
        {"username": student.username, "password": "correct-horse-battery", "name": "cli"},
        format="json",
    )
    assert right.status_code == 201
    assert api_token_authenticate(raw=right.json()["token"]).user == student


def test_an_account_that_must_change_its_password_gets_no_token(student):
    student.must_change_password = True
    student.save()
    response = APIClient().post(
        "/api/v1/auth/token/",
        {"username": student.username, "password": "correct-horse-battery"},
        format="json",
    )
    assert response.status_code == 403


def test_password_logins_are_throttled(student, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "1000/min", "token_login": "2/min"},
    }
    from django.core.cache import cache

    cache.clear()
    client = APIClient()
    answers = [
        client.post("/api/v1/auth/token/", {"username": "x", "password": "y"}, format="json").status_code
        for _ in range(3)
    ]
    cache.clear()
    assert answers == [401, 401, 429]


@pytest.mark.parametrize("behind_proxy", [False, True])
def test_a_new_x_forwarded_for_on_each_login_does_not_reset_the_count(student, settings, behind_proxy):
    # Each attempt claims another address; only the one the server (or its proxy) saw counts.
    settings.BEHIND_TLS_PROXY = behind_proxy
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "1000/min", "token_login": "2/min"},
    }
    client = APIClient()
    answers = [
        client.post(
            "/api/v1/auth/token/",
            {"username": "x", "password": "y"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}, 192.0.2.7",
        ).status_code
        for attempt in range(3)
    ]
    assert answers == [401, 401, 429]


def test_a_session_needs_csrf_for_writes(student):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(student)
    assert client.get("/api/v1/profile/").status_code == 200
    assert client.patch("/api/v1/profile/", {"default_extra_command": ""}, format="json").status_code == 403


def test_the_schema_and_the_offline_docs_are_served(client, db):
    schema = client.get(reverse("api-schema"))
    assert schema.status_code == 200 and b"/api/v1/reservations/" in schema.content
    docs = client.get(reverse("api-docs"))
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower() and b"/static/drf_spectacular_sidecar/" in docs.content


def test_a_token_stops_working_while_its_user_must_change_the_password(student):
    client = token_client(student)
    student.must_change_password = True
    student.save()
    response = client.get("/api/v1/profile/")
    assert response.status_code == 403
    assert_error_shape(response.json())


def test_a_session_that_must_change_its_password_gets_a_json_403_not_a_redirect(student):
    student.must_change_password = True
    student.save()
    client = APIClient()
    client.force_login(student)
    response = client.get("/api/v1/reservations/")
    assert response.status_code == 403
    assert_error_shape(response.json())


def test_password_guessing_through_the_api_is_locked_out_like_the_login_page(student, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "1000/min", "token_login": "1000/min"},
    }
    client = APIClient()
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        client.post(
            "/api/v1/auth/token/",
            {"username": student.username, "password": f"guess-{attempt}"},
            format="json",
        )
    right = client.post(
        "/api/v1/auth/token/",
        {"username": student.username, "password": "correct-horse-battery"},
        format="json",
    )
    assert right.status_code == 429
    assert_error_shape(right.json())
    assert not ApiToken.objects.filter(user=student).exists()
