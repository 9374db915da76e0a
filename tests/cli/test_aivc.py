"""The `aivc` client against a live server: real HTTP, real database."""

import json
import stat
from datetime import timedelta

import pytest
from aivc_cli import client
from aivc_cli.main import cli
from click.testing import CliRunner
from django.apps import apps
from django.utils import timezone

from accounts.models import ApiToken, CapabilityProfile
from accounts.token_services import api_token_create
from bookings.models import Reservation
from bookings.timeslots import SLOT, slot_floor
from containers.models import Image
from jobs.models import Job, WaitReason
from tests.factories import ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def aivc(live_server, tmp_path, monkeypatch):
    """Runs `aivc ARGS...` as a user would, with its config file in tmp_path."""
    monkeypatch.setenv("AIVC_CONFIG", str(tmp_path / "aivc" / "config.json"))
    monkeypatch.setenv("AIVC_URL", live_server.url)
    monkeypatch.delenv("AIVC_TOKEN", raising=False)
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    run.config = tmp_path / "aivc" / "config.json"
    return run


@pytest.fixture
def logged_in(aivc, student, monkeypatch):
    _token, raw = api_token_create(user=student, name="cli tests")
    monkeypatch.setenv("AIVC_TOKEN", raw)
    return aivc


def test_login_keeps_a_token_in_a_0600_file_and_it_works(aivc, student, host):
    result = aivc("login", "--username", student.username, input="correct-horse-battery\n")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(aivc.config.stat().st_mode) == 0o600
    saved = json.loads(aivc.config.read_text())
    assert saved["token"].startswith("aivc_") and ApiToken.objects.get(user=student).revoked_at is None
    assert aivc("ls").exit_code == 0
    assert aivc("logout").exit_code == 0
    assert ApiToken.objects.get(user=student).revoked_at is not None
    assert aivc("ls").exit_code == client.EXIT_AUTH


def test_a_token_is_taken_from_standard_input_never_from_the_command_line(aivc, student, host):
    _token, raw = api_token_create(user=student, name="made on the profile page")
    refused = aivc("login", "--token", raw)
    assert refused.exit_code == 2 and "use --with-token" in refused.output
    assert not aivc.config.exists()
    empty = aivc("login", "--with-token", input="")
    assert empty.exit_code == 2 and "No token" in empty.output

    result = aivc("login", "--with-token", input=f"{raw}\n")
    assert result.exit_code == 0, result.output
    assert json.loads(aivc.config.read_text())["token"] == raw
    assert raw not in result.output
    assert aivc("ls").exit_code == 0


def test_a_wrong_password_exits_3(aivc, student):
    result = aivc("login", "--username", student.username, input="wrong\n")
    assert result.exit_code == client.EXIT_AUTH
    assert "Wrong account id or password." in result.output
    assert not aivc.config.exists()


def test_book_now_for_two_days_and_list_it(logged_in, student, host):
    result = logged_in(
        "book", "--gpus", "1", "--cpus", "4", "--memory", "16", "--start", "now", "--end", "2-day"
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Booking successful!")
    reservation = Reservation.objects.get(user=student)
    assert reservation.end - reservation.start == timedelta(days=2) and reservation.gpu_count == 1
    listed = logged_in("--json", "ls")
    assert [row["id"] for row in json.loads(listed.output)["reservations"]] == [reservation.pk]


def test_a_refused_booking_exits_4_with_the_portals_message(logged_in, host):
    result = logged_in("book", "--gpus", "3", "--cpus", "4", "--memory", "16", "--end", "1-day")
    assert result.exit_code == client.EXIT_REFUSED
    assert "Over the maximum required." in result.output
    as_json = logged_in("--json", "book", "--cpus", "1", "--memory", "1", "--end", "99-day")
    assert as_json.exit_code == client.EXIT_REFUSED
    assert json.loads(as_json.output)["errors"]["end"][0].startswith("Wrong Input!")


def test_cancel_extend_release_and_a_stranger_id(logged_in, student, host):
    start = slot_floor(timezone.now()) + 2 * SLOT
    upcoming = ReservationFactory(user=student, host=host, start=start, end=start + timedelta(hours=2))
    assert logged_in("extend", str(upcoming.pk), "--end", "1-day").exit_code == 0
    assert logged_in("cancel", str(upcoming.pk)).exit_code == 0
    upcoming.refresh_from_db()
    assert upcoming.status == Reservation.Status.CANCELLED
    theirs = ReservationFactory(user=UserFactory(username="other"), host=host, start=start)
    result = logged_in("release", str(theirs.pk))
    assert result.exit_code == client.EXIT_NOT_FOUND


def test_ssh_prints_the_running_reservations_command(logged_in, student, host):
    assert logged_in("ssh").exit_code == client.EXIT_NOT_FOUND
    ReservationFactory(
        user=student,
        host=host,
        start=slot_floor(timezone.now()),
        end=slot_floor(timezone.now()) + 4 * SLOT,
        status=Reservation.Status.RUNNING,
    )
    result = logged_in("ssh")
    assert result.exit_code == 0
    assert result.output.strip() == f"ssh -p {student.forward_port} root@{host.address}"


def test_ls_all_shows_the_timeline_without_commands(logged_in, student, host):
    ReservationFactory(
        user=UserFactory(username="neighbour"),
        host=host,
        start=slot_floor(timezone.now()) + SLOT,
        end=slot_floor(timezone.now()) + 5 * SLOT,
        extra_command="--secret-flag",
        gpus=[host.gpus.get(index=0)],
    )
    result = logged_in("ls", "--all")
    assert result.exit_code == 0
    assert "neighbour" in result.output and "secret-flag" not in result.output


def test_an_unreachable_portal_exits_8(aivc, monkeypatch):
    monkeypatch.setenv("AIVC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AIVC_TOKEN", "aivc_x")
    assert aivc("ls").exit_code == client.EXIT_UNREACHABLE


@pytest.mark.skipif(not apps.is_installed("jobs"), reason="the jobs app is not in this build")
def test_jobs_submit_ls_logs_and_cancel(logged_in, student, host):
    submitted = logged_in(
        "--json",
        "jobs",
        "submit",
        "--cpus",
        "1",
        "--memory",
        "1",
        "--time-limit",
        "30",
        "--",
        "python",
        "x.py",
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.output)["id"]
    assert str(job_id) in logged_in("jobs", "ls").output
    assert logged_in("jobs", "logs", str(job_id), "--tail", "5").exit_code == 0
    held = logged_in("jobs", "hold", str(job_id))
    assert held.exit_code == 0, held.output
    assert "waiting: held" in held.output
    assert logged_in("jobs", "release", str(job_id)).exit_code == 0
    assert logged_in("jobs", "hold", "999999").exit_code == client.EXIT_NOT_FOUND
    assert logged_in("jobs", "cancel", str(job_id)).exit_code == 0
    assert logged_in("jobs", "logs", "999999").exit_code == client.EXIT_NOT_FOUND


def test_usage_shows_the_week_against_the_budget_and_a_waiting_jobs_reason(
    logged_in, student, host, settings
):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 0
    profile = CapabilityProfile.objects.get(is_default=True)
    profile.gpu_hours_per_week, profile.gpus_at_once = 50, 1
    profile.save()
    shown = logged_in("usage")
    assert shown.exit_code == 0, shown.output
    assert "GPU-hours, last 7 days: 0 / 50 (50 left)" in shown.output
    assert "GPUs held now: 0 / 1" in shown.output
    job = Job.objects.create(
        user=student,
        image=Image.objects.get(is_default=True),
        command="python x.py",
        cpus=1,
        memory_gb=1,
        gpu_count=1,
        time_limit_minutes=30,
        submitted_at=timezone.now(),
        wait_reason=WaitReason.GPUS_AT_ONCE,
        wait_detail="you hold 1 of 1 at once until 2026-03-02 12:00",
    )
    listed = logged_in("jobs", "ls").output
    assert f"job #{job.pk}" in listed
    assert "waiting: your GPUs at once: you hold 1 of 1 at once until 2026-03-02 12:00" in listed
