"""Notifications end to end: the scheduled task finds what happened, records it once and
e-mails it through a real SMTP server on 127.0.0.1 (aiosmtpd), whose inbox we read."""

import email
import email.header
import socket
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone, translation
from django_q.models import Schedule

from accounts.channel_services import email_kinds_set
from accounts.models import Notification
from accounts.tasks import send_notifications
from bookings.maintenance import host_drain
from bookings.models import Reservation
from bookings.services import reservation_release
from containers import events
from containers.models import ContainerEvent
from containers.services import event_record
from containers.telemetry.models import ReservationGpuStatus
from tests.api_helpers import token_client
from tests.factories import ContainerEventFactory, HostFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def inbox(settings):
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.PORTAL_URL = "https://portal.lab.example"
    yield handler
    controller.stop()


@pytest.fixture
def mailed_student(student):
    student.email = "m11007s05@lab.example"
    student.save()
    email_kinds_set(
        user=student, kinds=["running", "ending_soon", "blocked", "failed", "job_finished", "idle"]
    )
    return student


def running(user, host, **fields):
    now = timezone.now()
    values = {
        "start": now - timedelta(minutes=20),
        "end": now + timedelta(hours=3),
        "status": Reservation.Status.RUNNING,
        "started_at": now - timedelta(minutes=5),
    }
    return ReservationFactory(user=user, host=host, **(values | fields))


def test_a_running_container_is_mailed_once_with_the_ssh_command(inbox, mailed_student, host):
    running(mailed_student, host)
    send_notifications()
    send_notifications()  # A second tick finds the same event and sends nothing more.
    [message] = inbox.messages
    assert message["X-Envelope-To"] == "m11007s05@lab.example"
    assert "is running" in message["Subject"]
    body = message.get_payload(decode=True).decode()
    assert f"ssh -p {mailed_student.forward_port} root@{host.address}" in body
    assert "https://portal.lab.example/reservations/" in body
    assert Notification.objects.get().email == Notification.Email.SENT


def test_a_reservation_ending_within_30_minutes_warns_once(inbox, mailed_student, host):
    running(
        mailed_student,
        host,
        started_at=timezone.now() - timedelta(days=2),
        end=timezone.now() + timedelta(minutes=20),
    )
    send_notifications()
    send_notifications()
    assert [m["Subject"] for m in inbox.messages if "ends at" in m["Subject"]] and len(inbox.messages) == 1


def test_a_blocked_launch_says_the_figures(inbox, mailed_student, host):
    figures = "Over the space quota: work folder 250 GB of 200 GB, backup folder 10 GB of 50 GB."
    ReservationFactory(
        user=mailed_student,
        host=host,
        start=timezone.now() - timedelta(minutes=5),
        end=timezone.now() + timedelta(hours=1),
        status=Reservation.Status.BLOCKED,
        status_message=figures,
    )
    send_notifications()
    [message] = inbox.messages
    assert figures in message.get_payload(decode=True).decode()


def test_kinds_not_chosen_stay_in_the_portal_only(inbox, mailed_student, host):
    email_kinds_set(user=mailed_student, kinds=[])
    running(mailed_student, host)
    send_notifications()
    assert inbox.messages == []
    assert Notification.objects.get().email == Notification.Email.SKIPPED


def test_a_user_released_reservation_is_no_news_but_an_ended_one_is(inbox, mailed_student, host):
    email_kinds_set(user=mailed_student, kinds=["ended"])
    now = timezone.now()
    ended = dict(
        status=Reservation.Status.ENDED, ended_at=now - timedelta(minutes=1), start=now - timedelta(hours=3)
    )
    ReservationFactory(user=mailed_student, host=host, end=now - timedelta(minutes=1), **ended)
    ReservationFactory(
        user=mailed_student,
        host=host,
        end=now - timedelta(hours=2),
        released_at=now - timedelta(hours=2),
        **(ended | {"start": now - timedelta(hours=4)}),
    )
    send_notifications()
    assert len(inbox.messages) == 1 and "has ended" in inbox.messages[0]["Subject"]


def test_a_reservation_someone_else_stops_or_cancels_is_mailed_with_the_reason(
    inbox, mailed_student, host, admin_client
):
    email_kinds_set(user=mailed_student, kinds=["stopped"])
    stopped_by_admin = running(mailed_student, host)
    admin_client.post(
        reverse("admin:bookings_reservation_changelist"),
        {"action": "stop_now", "_selected_action": [stopped_by_admin.pk]},
    )
    later = timezone.now() + timedelta(days=2)
    ReservationFactory(user=mailed_student, host=host, start=later, end=later + timedelta(hours=2))
    host_drain(host=host)
    mine_released = running(UserFactory(username="m11007s06"), HostFactory(name="gpu-09"))
    reservation_release(reservation=mine_released)  # its owner's own act: no news

    send_notifications()

    subjects = sorted(" ".join(message["Subject"].split()) for message in inbox.messages)
    assert len(subjects) == 2, subjects
    assert "was cancelled" in subjects[0] and "was stopped" in subjects[1]
    mails = " ".join(message.as_string() for message in inbox.messages)
    assert "maintainer stopped it" in mails and "taken out of service for maintenance" in mails
    assert Notification.objects.filter(user=mailed_student, kind="stopped").count() == 2
    assert not Notification.objects.filter(user=mine_released.user).exists()


def test_idle_gpus_and_a_finished_job_are_told(inbox, mailed_student, host):
    reservation = running(mailed_student, host, started_at=timezone.now() - timedelta(days=1))
    ReservationGpuStatus.objects.create(
        reservation=reservation, idle_flagged_at=timezone.now() - timedelta(minutes=1)
    )
    ContainerEventFactory(
        user=mailed_student,
        sign="JobFinished",
        message="m11007s05's job #7 succeeded (exit code 0)",
        host=host,
    )
    send_notifications()
    subjects = sorted(m["Subject"] for m in inbox.messages)
    assert any("idle" in s for s in subjects) and any("job has finished" in s for s in subjects)
    job = next(m for m in inbox.messages if "job" in m["Subject"])
    assert "exit code 0" in job.get_payload(decode=True).decode()
    assert "https://portal.lab.example/jobs/7/" in job.get_payload(decode=True).decode()


def test_maintainers_hear_of_an_engine_down_and_a_gpu_used_twice(inbox, host, student):
    maintainer = UserFactory(username="maint", is_staff=True, email="maint@lab.example")
    ContainerEventFactory(
        level=ContainerEvent.Level.ERROR,
        sign="EngineUnavailable",
        message="The engine does not answer",
        host=host,
    )
    ContainerEventFactory(
        level=ContainerEvent.Level.WARNING, sign="GPUDuplicateWarning", message="pid 7", host=host
    )
    send_notifications()
    assert sorted(m["X-Envelope-To"] for m in inbox.messages) == ["maint@lab.example"] * 2
    assert not Notification.objects.filter(user=student).exists()
    assert Notification.objects.filter(user=maintainer).count() == 2


def test_a_mail_server_that_is_down_marks_failed_and_never_resends(settings, mailed_student, host):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", _free_port(), 2
    running(mailed_student, host)
    with pytest.raises(OSError):
        send_notifications()
    # The connection failed before any claim: still pending, sent on a later tick.
    assert Notification.objects.get().email == Notification.Email.PENDING


def test_the_header_badge_counts_unread_and_the_list_marks_them_read(client, mailed_student, host):
    running(mailed_student, host)
    send_notifications()
    client.force_login(mailed_student)
    page = client.get(reverse("dashboard"))
    assert b'data-testid="unread-badge"' in page.content
    listing = client.get(reverse("notifications"))
    assert b"is running" in listing.content
    assert client.post(reverse("notifications")).status_code == 302
    assert b'data-testid="unread-badge"' not in client.get(reverse("dashboard")).content


def test_the_api_lists_own_notifications_and_marks_them_read(mailed_student, host):
    running(mailed_student, host)
    send_notifications()
    other = token_client(UserFactory(username="other"))
    assert other.get("/api/v1/notifications/").json()["count"] == 0
    api = token_client(mailed_student)
    [row] = api.get("/api/v1/notifications/").json()["results"]
    assert other.post("/api/v1/notifications/read/", {"ids": [row["id"]]}, format="json").json() == {
        "marked": 0
    }
    assert api.post("/api/v1/notifications/read/", {"ids": [row["id"]]}, format="json").json() == {
        "marked": 1
    }


def test_setup_schedules_registers_the_notifier_apart_from_reconcile(db):
    call_command("setup_schedules")
    call_command("setup_schedules")
    assert Schedule.objects.filter(func="accounts.tasks.send_notifications").count() == 1


def test_a_zh_hant_user_is_mailed_in_zh_hant(inbox, mailed_student, host):
    mailed_student.language = "zh-hant"
    mailed_student.save()
    running(mailed_student, host)
    send_notifications()
    [message] = inbox.messages
    subject = str(email.header.make_header(email.header.decode_header(message["Subject"])))
    body = message.get_payload(decode=True).decode()
    assert f"你在 {host.name} 上的容器正在執行" in subject
    assert "連線方式" in body and "可在個人資料頁選擇" in body
    assert Notification.objects.get().title == f"你在 {host.name} 上的容器正在執行"


def test_an_english_user_is_mailed_in_english_whatever_the_worker_speaks(inbox, mailed_student, host):
    mailed_student.language = "en"
    mailed_student.save()
    running(mailed_student, host)
    with translation.override("zh-hant"):
        send_notifications()
    [message] = inbox.messages
    assert message["Subject"].endswith(f"Your container on {host.name} is running")
    assert "choose which notices you get by e-mail" in message.get_payload(decode=True).decode()


def test_a_finished_job_notice_is_the_event_said_in_the_users_language(student, host):
    student.language = "zh-hant"
    student.save()
    event = events.job_finished(username=student.username, job_id=7, status="succeeded", exit_code=0)
    event_record(event=event, user=student, host=host)
    send_notifications()
    notice = Notification.objects.get(user=student)
    assert notice.title == "你的工作已結束"
    assert notice.body == f"{student.username} 的工作 #7 成功（結束代碼 0）"
