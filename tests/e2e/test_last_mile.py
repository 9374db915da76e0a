"""The whole journey of a new student, in both languages, on the real engine with the
offline sshd image: first login and the forced password change, key upload, a booking
that starts now, the running status appearing without a reload, the exact ssh command
(which logs in), and release. Screenshots go to artifacts/screenshots/lastmile-*."""

import re
import socket
import subprocess
import uuid

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from bookings.models import Reservation
from containers.tasks import reconcile
from tests.containers.conftest import docker_client, docker_scope  # noqa: F401 - fixtures
from tests.containers.test_ssh_login import (  # noqa: F401 - sshd_image is a fixture
    _key_pair,
    _learn_host_key,
    _tick_until_running,
    sshd_image,
)
from tests.factories import UserFactory, host_with_roots

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

FIRST_PASSWORD = "handed-over-0000"
OWN_PASSWORD = "a-much-better-passphrase-42"
# What each step shows, in each language (the rest of the journey uses ids and test ids).
TEXT = {
    "en": {"running": "Running", "ended": "Ended", "change_password": "Please choose your own password"},
    "zh-hant": {"running": "執行中", "ended": "已結束", "change_password": None},
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def lab_host(db, tmp_path):
    return host_with_roots(
        tmp_path, name=f"e2e-{uuid.uuid4().hex[:6]}", address="127.0.0.1", cpus=4, ram_gb=8, swap_gb=0
    )


@pytest.mark.parametrize("language", ["en", "zh-hant"])
def test_a_new_student_books_now_and_logs_in_with_ssh(
    page,
    screenshot,
    language,
    lab_host,
    sshd_image,  # noqa: F811 - the imported fixture
    docker_scope,  # noqa: F811 - the imported fixture
    default_profile,
    tmp_path,
):
    shot = lambda name: screenshot(page, f"lastmile-{language}-{name}")  # noqa: E731
    sshd_image.is_default = True
    sshd_image.save()
    student = UserFactory(
        username=f"m11{uuid.uuid4().hex[:6]}", must_change_password=True, forward_port=_free_port()
    )
    student.set_password(FIRST_PASSWORD)
    student.save()
    key, public_key = _key_pair(tmp_path, "laptop")

    # First login, in the chosen language, and the forced password change.
    page.goto("/accounts/login/")
    page.locator("#language-select").select_option(language)
    page.locator("form.language button").click()
    expect(page.locator("html")).to_have_attribute("lang", "en" if language == "en" else "zh-Hant")
    page.locator("#id_username").fill(student.username)
    page.locator("#id_password").fill(FIRST_PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/accounts/password/"))
    shot("1-first-login")
    page.locator("#id_old_password").fill(FIRST_PASSWORD)
    page.locator("#id_new_password1").fill(OWN_PASSWORD)
    page.locator("#id_new_password2").fill(OWN_PASSWORD)
    page.locator("main form button[type=submit]").click()

    # Before the key is there, the dashboard warns.
    expect(page.get_by_test_id("no-keys-warning")).to_be_visible()
    shot("2-dashboard-no-key")
    page.goto("/accounts/profile/")
    page.locator("#id_profile-ssh_public_keys").fill(public_key)
    page.locator("button[name=action][value=profile]").click()
    page.goto("/")
    expect(page.get_by_test_id("no-keys-warning")).to_have_count(0)

    # Book now.
    page.goto("/reservations/new/")
    page.locator("#id_start_now").check()
    page.locator("#id_cpus").fill("1")
    page.locator("#id_memory_gb").fill("1")
    page.locator("#id_gpu_count").fill("0")
    shot("3-booking-form")
    page.locator("#booking-form button[type=submit]").click()
    expect(page.get_by_test_id("live-status")).to_be_visible()
    reservation = Reservation.objects.get(user=student)
    shot("4-booked")

    # The scheduler's tick starts the container; the page shows it without a reload.
    page.evaluate("window.__not_reloaded = true")
    assert "Running" not in page.get_by_test_id("status").inner_text()
    _tick_until_running(reservation, host=lab_host)
    expect(page.get_by_test_id("status")).to_have_text(TEXT[language]["running"], timeout=20_000)
    assert page.evaluate("window.__not_reloaded === true")
    command = page.get_by_test_id("ssh-command").inner_text()
    assert command == f"ssh -p {student.forward_port} root@127.0.0.1"
    shot("5-running-with-ssh-command")

    # The command shown logs in with the uploaded key.
    known_hosts = tmp_path / "known_hosts"
    _learn_host_key(port=student.forward_port, known_hosts=known_hosts)
    login = subprocess.run(
        [
            *command.split(),
            "-i",
            str(key),
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "echo",
            "inside",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert login.stdout.strip() == "inside", login.stderr

    # The dashboard shows the same command.
    page.goto("/")
    expect(page.get_by_test_id("ssh-command")).to_have_text(command)
    shot("6-dashboard-running")

    # Release.
    page.goto(f"/reservations/{reservation.pk}/release/")
    page.locator("main form button[type=submit]").click()
    expect(page.get_by_test_id("status")).to_have_text(TEXT[language]["ended"])
    reconcile(host_id=lab_host.pk, wake=False)
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.ENDED
    assert reservation.ended_at <= timezone.now()
    shot("7-released")
