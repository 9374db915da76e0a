from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.services import FORWARD_PORT_DUPLICATED
from tests.accounts.test_profile_services import ED25519
from tests.factories import ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_the_profile_saves_valid_keys(client, student):
    client.force_login(student)
    response = client.post(
        reverse("profile"),
        {"action": "profile", "profile-ssh_public_keys": ED25519, "profile-default_extra_command": ""},
    )
    assert response.status_code == 302
    student.refresh_from_db()
    assert student.ssh_public_keys == ED25519


def test_the_profile_shows_a_bad_key_next_to_the_field(client, student):
    client.force_login(student)
    response = client.post(reverse("profile"), {"action": "profile", "profile-ssh_public_keys": "hello"})
    assert (
        "Line 1 is not an OpenSSH public key" in response.context["profile_form"].errors["ssh_public_keys"][0]
    )


def test_the_port_form_refuses_a_port_another_users_booking_still_uses(client, student, host):
    other = UserFactory(username="other")
    ReservationFactory(
        user=other,
        host=host,
        start=timezone.now() - timedelta(hours=1),
        end=timezone.now() + timedelta(hours=3),
    )
    old_port = other.forward_port
    other.forward_port = old_port + 100
    other.save()
    client.force_login(student)
    response = client.post(reverse("profile"), {"action": "port", "port-forward_port": old_port})
    assert response.context["port_form"].errors["forward_port"] == [FORWARD_PORT_DUPLICATED]


def test_an_account_that_must_change_its_password_is_sent_to_the_form(client, student):
    student.must_change_password = True
    student.save()
    client.force_login(student)
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response.url == reverse("password_change")


def test_the_language_switch_shows_traditional_chinese(client, student, host):
    client.force_login(student)
    client.post(reverse("set_language"), {"language": "zh-hant", "next": "/"})
    page = client.get(reverse("dashboard")).content.decode()
    assert "你的最大可用資源" in page
    assert 'lang="zh-Hant"' in page


def test_the_language_chosen_on_the_profile_page_is_kept_and_wins_over_the_browser(client, student):
    client.force_login(student)
    response = client.post(
        reverse("profile"),
        {"action": "profile", "profile-ssh_public_keys": "", "profile-language": "zh-hant"},
    )
    assert response.status_code == 302
    student.refresh_from_db()
    assert student.language == "zh-hant"
    page = client.get(reverse("dashboard"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'lang="zh-Hant"' in page


def test_an_unknown_language_is_refused_on_the_profile_page(client, student):
    client.force_login(student)
    response = client.post(
        reverse("profile"), {"action": "profile", "profile-ssh_public_keys": "", "profile-language": "xx"}
    )
    assert response.status_code == 200
    student.refresh_from_db()
    assert student.language == ""


def test_the_header_switch_stores_the_signed_in_users_choice(client, student):
    client.force_login(student)
    client.post(reverse("set_language"), {"language": "zh-hant", "next": "/"})
    student.refresh_from_db()
    assert student.language == "zh-hant"
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    student.refresh_from_db()
    assert student.language == "en"


def test_a_language_switched_before_login_is_kept_at_login(client, student):
    student.set_password("a-long-lab-password")
    student.save()
    client.post(reverse("set_language"), {"language": "zh-hant", "next": "/"})
    client.post(reverse("login"), {"username": student.username, "password": "a-long-lab-password"})
    student.refresh_from_db()
    assert student.language == "zh-hant"
