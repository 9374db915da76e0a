"""Login throttling as an attacker would probe it: guessing one account's password, spraying
many accounts from one (shared) address, varying the id's case, forging X-Forwarded-For,
and trying to turn the lockout on a classmate or on the superuser."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiToken, Notification, NotificationKind
from tests.admin_helpers import message_texts, post_action
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"
ATTACKER = "203.0.113.7"
ELSEWHERE = "198.51.100.20"
CAMPUS_NAT = "192.0.2.44"


def log_in(client, username: str, password: str, address: str = ATTACKER, **headers):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **headers
    )


def api_log_in(username: str, password: str, address: str = ATTACKER):
    return APIClient().post(
        reverse("api-login"),
        {"username": username, "password": password, "name": "cli"},
        format="json",
        REMOTE_ADDR=address,
    )


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def time_passes(seconds: float) -> None:
    """Moves every counted failure `seconds` into the past."""
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= timedelta(seconds=seconds)
        attempt.save(update_fields=["attempt_time"])


def test_200_wrong_passwords_then_the_right_one_does_not_log_in(client):
    user = UserFactory(username="m11007s05")
    for attempt in range(200):
        log_in(client, user.username, f"guess-{attempt}")
    response = log_in(client, user.username, PASSWORD)
    assert not logged_in(client)
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "ask a lab maintainer to unlock" in response.content.decode()


def test_the_pause_holds_in_another_case_and_spacing_of_the_id(client, settings):
    user = UserFactory(username="m11007s05")
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        log_in(client, "M11007S05 " if attempt % 2 else user.username, f"guess-{attempt}")
    log_in(client, user.username, PASSWORD)
    assert not logged_in(client)


@pytest.mark.parametrize("victim_kind", ["student", "superuser"])
def test_wrong_passwords_from_one_address_never_lock_the_owner_out_from_another(
    client, settings, victim_kind
):
    victim = UserFactory(username="m11007s05", is_staff=victim_kind == "superuser")
    if victim_kind == "superuser":
        victim.is_superuser = True
        victim.save()
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        log_in(client, victim.username, f"guess-{attempt}", address=ATTACKER)

    # The attacker's address stays paused, even with the right password...
    response = log_in(client, victim.username, PASSWORD, address=ATTACKER)
    assert response.status_code == 429 and not logged_in(client)
    # ...while the owner, from her own network, logs in.
    log_in(client, victim.username, PASSWORD, address=ELSEWHERE)
    assert logged_in(client)


def test_wrong_api_passwords_from_one_address_never_lock_the_owner_out_from_another(settings):
    victim = UserFactory(username="m11007s05")
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        assert api_log_in(victim.username, f"guess-{attempt}", address=ATTACKER).status_code in (401, 429)
    paused = api_log_in(victim.username, PASSWORD, address=ATTACKER)
    assert paused.status_code == 429
    owner = api_log_in(victim.username, PASSWORD, address=ELSEWHERE)
    assert owner.status_code == 201, owner.content
    assert ApiToken.objects.filter(user=victim).count() == 1


def spray_from_the_nat(client, victims, *, attempts: int = 200) -> list[int]:
    return [
        log_in(
            client, victims[number % len(victims)].username, f"Summer{number}!", address=CAMPUS_NAT
        ).status_code
        for number in range(attempts)
    ]


def test_a_spray_from_a_campus_nat_is_slowed_never_locks_a_classmate_and_is_reported_once(client, settings):
    maintainers = [UserFactory(is_staff=True), UserFactory(is_staff=True)]
    victims = [UserFactory() for _ in range(50)]
    answers = spray_from_the_nat(client, victims, attempts=200)
    assert 429 in answers, "the spray is slowed"

    # A classmate behind the same NAT who types her password logs in at once.
    classmate = UserFactory(username="m11007s05")
    response = log_in(client, classmate.username, PASSWORD, address=CAMPUS_NAT)
    assert response.status_code == 302 and logged_in(client)
    client.logout()

    # A sprayed account waits seconds, not a lockout, from the NAT...
    sprayed = victims[0]
    slowed = log_in(client, sprayed.username, PASSWORD, address=CAMPUS_NAT)
    assert slowed.status_code == 429 and not logged_in(client)
    assert "wait" in slowed.content.decode()
    assert 0 < int(slowed["Retry-After"]) <= settings.LOGIN_SLOW_MAX_SECONDS
    # ...and once that wait is over, the right password logs in.
    time_passes(settings.LOGIN_SLOW_MAX_SECONDS + 1)
    log_in(client, sprayed.username, PASSWORD, address=CAMPUS_NAT)
    assert logged_in(client)

    # The maintainers heard of it once each (200 attempts, one notice), the others not at all.
    notices = Notification.objects.filter(kind=NotificationKind.LOGIN_FLOOD)
    assert sorted(notices.values_list("user_id", flat=True)) == sorted(m.pk for m in maintainers)
    assert all(CAMPUS_NAT in notice.body for notice in notices)


def test_a_spray_through_the_api_from_a_campus_nat_leaves_a_classmate_her_token():
    victims = [UserFactory() for _ in range(50)]
    for number in range(200):
        api_log_in(victims[number % len(victims)].username, f"Summer{number}!", address=CAMPUS_NAT)
    classmate = UserFactory(username="m11007s05")
    response = api_log_in(classmate.username, PASSWORD, address=CAMPUS_NAT)
    assert response.status_code == 201, response.content


def test_a_guess_at_one_account_from_many_addresses_is_reported_to_maintainers(client, settings):
    maintainer = UserFactory(is_staff=True)
    victim = UserFactory(username="m11007s05")
    for number in range(settings.LOGIN_FLOOD_THRESHOLD):
        log_in(client, victim.username, f"guess-{number}", address=f"198.51.100.{number % 200}")
    notice = Notification.objects.get(kind=NotificationKind.LOGIN_FLOOD, user=maintainer)
    assert victim.username in notice.body
    # No address reached its own limit, so the owner is not locked out anywhere.
    log_in(client, victim.username, PASSWORD, address=ELSEWHERE)
    assert logged_in(client)


def test_a_forged_forwarded_for_does_not_give_fresh_tries_behind_the_proxy(client, settings):
    settings.BEHIND_TLS_PROXY = True
    victim = UserFactory()
    # The proxy appends the address it saw last; a client can only prepend fakes.
    for number in range(settings.LOGIN_FAILURE_LIMIT):
        log_in(
            client,
            victim.username,
            f"guess-{number}",
            address="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{number}, {ATTACKER}",
        )
    log_in(
        client, victim.username, PASSWORD, address="127.0.0.1", HTTP_X_FORWARDED_FOR=f"10.9.9.9, {ATTACKER}"
    )
    assert not logged_in(client)


def test_a_maintainer_unlocks_an_account_from_admin(client, admin_client, settings):
    user = UserFactory(username="m11007s05")
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        log_in(client, user.username, f"guess-{attempt}")
    log_in(client, user.username, PASSWORD)
    assert not logged_in(client)

    response = post_action(
        admin_client, "unlock_login", user, changelist=reverse("admin:accounts_user_changelist")
    )
    assert any("Unlocked 1 account" in text for text in message_texts(response))

    log_in(client, user.username, PASSWORD)
    assert logged_in(client)
