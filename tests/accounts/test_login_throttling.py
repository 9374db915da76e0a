"""Login throttling as an attacker would probe it: guessing one account's password,
spraying many accounts from one address, varying the id's case, forging X-Forwarded-For."""

import pytest
from django.urls import reverse

from tests.admin_helpers import message_texts, post_action
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"


def log_in(client, username: str, password: str, address: str = "203.0.113.7", **headers):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **headers
    )


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_200_wrong_passwords_then_the_right_one_does_not_log_in(client):
    user = UserFactory(username="m11007s05")
    for attempt in range(200):
        log_in(client, user.username, f"guess-{attempt}")
    response = log_in(client, user.username, PASSWORD)
    assert not logged_in(client)
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "ask a lab maintainer to unlock" in response.content.decode()


def test_the_lock_holds_from_another_address_and_in_another_case(client, settings):
    user = UserFactory(username="m11007s05")
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        log_in(client, "M11007S05 " if attempt % 2 else user.username, f"guess-{attempt}")
    log_in(client, user.username, PASSWORD, address="198.51.100.20")
    assert not logged_in(client)


def test_one_address_spraying_many_accounts_is_stopped(client, settings):
    victims = [UserFactory() for _ in range(settings.LOGIN_FAILURE_LIMIT)]
    for victim in victims:
        log_in(client, victim.username, "Summer2026!")
    bystander = UserFactory()
    response = log_in(client, bystander.username, PASSWORD)
    assert response.status_code == 429 and not logged_in(client)
    # The same account from an address that did nothing wrong still logs in.
    log_in(client, bystander.username, PASSWORD, address="198.51.100.20")
    assert logged_in(client)


def test_a_forged_forwarded_for_does_not_give_fresh_tries_behind_the_proxy(client, settings):
    settings.BEHIND_TLS_PROXY = True
    victims = [UserFactory() for _ in range(settings.LOGIN_FAILURE_LIMIT)]
    # The proxy appends the address it saw last; a client can only prepend fakes.
    for number, victim in enumerate(victims):
        log_in(
            client,
            victim.username,
            "Summer2026!",
            address="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{number}, 203.0.113.7",
        )
    log_in(
        client,
        UserFactory().username,
        PASSWORD,
        address="127.0.0.1",
        HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.7",
    )
    assert not logged_in(client)


def test_a_maintainer_unlocks_an_account_from_admin(client, admin_client, settings):
    user = UserFactory(username="m11007s05")
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        log_in(client, user.username, f"guess-{attempt}", address=f"198.51.100.{attempt}")
    log_in(client, user.username, PASSWORD, address="192.0.2.1")
    assert not logged_in(client)

    response = post_action(
        admin_client, "unlock_login", user, changelist=reverse("admin:accounts_user_changelist")
    )
    assert any("Unlocked 1 account" in text for text in message_texts(response))

    log_in(client, user.username, PASSWORD, address="192.0.2.1")
    assert logged_in(client)
