import re
from smtplib import SMTPRecipientsRefused

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.urls import reverse

from accounts.models import User
from tests.factories import CapabilityProfileFactory, HostFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def maintainer(client):
    user = UserFactory(username="maint", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def test_bulk_creation_page_creates_accounts_and_shows_passwords_once(client, maintainer):
    url = reverse("admin:accounts_user_bulk_create")
    assert client.get(url).status_code == 200
    response = client.post(url, {"usernames": "m1100a01, M1100A02\nm1100a03"})
    assert response.status_code == 200
    created = User.objects.filter(username__startswith="m1100a")
    assert created.count() == 3
    assert all(user.must_change_password for user in created)
    assert len(response.context["created"]) == 3


def test_bulk_creation_page_shows_a_bad_id_next_to_the_field(client, maintainer):
    response = client.post(reverse("admin:accounts_user_bulk_create"), {"usernames": "ok1 bad/id"})
    assert response.status_code == 200
    assert response.context["form"].errors["usernames"]
    assert not User.objects.filter(username="ok1").exists()


def test_the_user_page_shows_effective_limits_per_host(client, maintainer):
    CapabilityProfileFactory(is_default=True, cpus=8, memory_gb=32, gpus=1)
    HostFactory(name="gpu-07", gpus=2)
    student = UserFactory()
    response = client.get(reverse("admin:accounts_user_change", args=[student.pk]))
    assert "gpu-07" in response.content.decode()
    assert "cpus=8 memory=32 GB gpus=1" in response.content.decode()


@pytest.mark.parametrize(
    "name",
    [
        "containers_host",
        "containers_gpu",
        "containers_image",
        "containers_containerevent",
        "containers_spaceaudit",
        "accounts_capabilityprofile",
        "bookings_reservation",
        "bookings_gpuallocation",
        "accounts_user",
    ],
)
def test_every_model_has_an_admin_list(client, maintainer, name):
    assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200


def test_adding_an_account_in_admin_assigns_a_free_port(client, maintainer, settings):
    settings.PORT_RANGE = range(10001, 11000)
    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "M1100B01",
            "usable_password": "true",
            "password1": "q-w-e-r-t-y-1234",
            "password2": "q-w-e-r-t-y-1234",
        },
    )
    assert response.status_code == 302
    user = User.objects.get(username="m1100b01")
    assert maintainer.forward_port is None  # staff: a port only when a booking needs one
    assert user.forward_port == 10001


def test_adding_an_account_when_every_port_is_taken_shows_an_error_not_a_crash(client, maintainer, settings):
    settings.PORT_RANGE = range(10001, 10002)
    UserFactory()  # holds the one port (the maintainer, staff, holds none)
    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "m1100b02",
            "usable_password": "true",
            "password1": "q-w-e-r-t-y-1234",
            "password2": "q-w-e-r-t-y-1234",
        },
    )
    assert response.status_code == 200
    assert "No free forward port" in response.content.decode()
    assert not User.objects.filter(username="m1100b02").exists()


def test_a_forward_port_outside_the_range_is_refused_in_admin(client, maintainer):
    student = UserFactory()
    url = reverse("admin:accounts_user_change", args=[student.pk])
    form = client.get(url).context["adminform"].form
    data = {key: value for key, value in form.initial.items() if value is not None and key != "password"}
    data.update({"forward_port": 80, "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    data.pop("groups", None), data.pop("user_permissions", None), data.pop("last_login", None)
    response = client.post(url, data)
    assert response.status_code == 200
    assert "Choose a port from" in response.content.decode()


def _link(body: str) -> str:
    return re.search(r"https?://\S+/accounts/password/set/\S+/", body).group(0)


def test_bulk_creation_mails_a_one_time_link_instead_of_showing_a_password(client, maintainer, settings):
    settings.PORTAL_URL = "https://portal.lab.example"
    url = reverse("admin:accounts_user_bulk_create")
    response = client.post(url, {"usernames": "m1100b01 m1100b01@lab.example\nm1100b02"})
    page = response.content.decode()
    mailed = User.objects.get(username="m1100b01")
    shown = User.objects.get(username="m1100b02")
    [message] = mail.outbox
    assert message.to == ["m1100b01@lab.example"]
    assert "Link mailed to m1100b01@lab.example" in page
    # The mailed account has no password at all until its owner sets one; the other keeps
    # today's behaviour, its one-time password on the page.
    assert not mailed.has_usable_password() and not mailed.must_change_password
    [(_, password, _)] = [row for row in response.context["created"] if row[0] == shown]
    assert password and f"<code>{password}</code>" in page and shown.must_change_password

    link = _link(message.body)
    assert link.startswith("https://portal.lab.example/")
    client.logout()
    form = client.get(link.removeprefix("https://portal.lab.example"), follow=True)
    assert form.status_code == 200 and form.context["validlink"]
    new = "a-good-passphrase-of-mine-9"
    done = client.post(form.redirect_chain[-1][0], {"new_password1": new, "new_password2": new})
    assert done.status_code == 302 and done.url == reverse("login")
    mailed.refresh_from_db()
    assert mailed.check_password(new)
    # The link works once.
    again = client.get(link.removeprefix("https://portal.lab.example"), follow=True)
    assert not again.context["validlink"]


def test_the_link_mail_is_written_in_the_lab_language_of_a_new_account(client, maintainer, settings):
    settings.LANGUAGE_CODE = "zh-hant"
    client.post(reverse("admin:accounts_user_bulk_create"), {"usernames": "m1100c01 c01@lab.example"})
    [message] = mail.outbox
    assert "設定密碼" in message.subject


@pytest.mark.parametrize("text", ["someone@lab.example m1100d01", "m1100d01 a@lab.example b@lab.example"])
def test_an_address_without_its_own_id_is_refused_and_nothing_is_created(client, maintainer, text):
    response = client.post(reverse("admin:accounts_user_bulk_create"), {"usernames": text})
    assert response.context["form"].errors["usernames"]
    assert not User.objects.filter(username="m1100d01").exists() and not mail.outbox


def test_a_mail_server_that_refuses_leaves_the_account_and_says_so(client, maintainer, settings):
    settings.EMAIL_BACKEND = "tests.accounts.test_admin.RefusingBackend"
    response = client.post(
        reverse("admin:accounts_user_bulk_create"), {"usernames": "m1100e01 e@lab.example"}
    )
    assert User.objects.filter(username="m1100e01").exists()
    assert "Mail to e@lab.example failed" in response.content.decode()


class RefusingBackend(BaseEmailBackend):
    def send_messages(self, messages):
        raise SMTPRecipientsRefused({"e@lab.example": (550, b"no such user")})
