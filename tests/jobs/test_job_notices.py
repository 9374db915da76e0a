"""The "job started" and "near its time limit" notices: told once per job by the notifier
task, in the portal and by e-mail for users who chose the kind, in their language."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.channel_services import email_kinds_set
from accounts.models import Notification, NotificationKind
from accounts.tasks import send_notifications
from containers.services import reservation_mark_running, reservation_mark_starting
from jobs.models import Job
from jobs.scheduling import run_pass
from jobs.services import job_mark_running, job_submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _mailbox(student):
    student.email = "m11007s05@lab.example"
    student.save()


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 0
    settings.JOB_NEAR_LIMIT_MINUTES = 10
    settings.SITE_NAME = "AIVC Portal"
    settings.NOTIFY_LOOKBACK_HOURS = 24
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def running_job(user, *, minutes: int, started_ago: timedelta = timedelta(0)) -> Job:
    """A job the scheduler started and the lifecycle saw running, `started_ago`."""
    at = timezone.now() - started_ago
    job = job_submit(
        user=user,
        command="python train.py",
        cpus=1,
        memory_gb=1,
        gpu_count=1,
        time_limit_minutes=minutes,
        now=at,
    )
    run_pass(now=at)
    job.refresh_from_db()
    reservation_mark_starting(reservation=job.reservation)
    reservation_mark_running(reservation=job.reservation, container_id=f"c{job.pk}", now=at)
    job_mark_running(job=job, now=at)
    return job


def of_kind(kind: str) -> list[Notification]:
    return list(Notification.objects.filter(kind=kind))


def test_a_started_job_is_told_once_in_the_portal(student, host):
    job = running_job(student, minutes=120)
    send_notifications()
    send_notifications()
    [notice] = of_kind(NotificationKind.JOB_STARTED)
    assert notice.user == student
    assert notice.title == f"Job #{job.pk} has started on {host.name}"
    assert notice.link == f"/jobs/{job.pk}/"
    # Not among the kinds e-mailed by default: the portal only, unless chosen.
    assert notice.email == Notification.Email.SKIPPED


def test_a_user_who_chose_it_gets_the_started_notice_by_email(student, host):
    email_kinds_set(user=student, kinds=[NotificationKind.JOB_STARTED])
    job = running_job(student, minutes=120)
    send_notifications()
    assert [message.subject for message in mail.outbox] == [
        f"[AIVC Portal] Job #{job.pk} has started on gpu-01"
    ]


def test_a_job_near_its_limit_is_told_once_and_emailed_by_default(student, host):
    job = running_job(student, minutes=60, started_ago=timedelta(minutes=52))
    send_notifications()
    send_notifications()
    [notice] = of_kind(NotificationKind.JOB_NEAR_LIMIT)
    assert f"Job #{job.pk} reaches its time limit" in notice.title
    assert notice.email == Notification.Email.SENT
    assert sum(f"Job #{job.pk} reaches" in message.subject for message in mail.outbox) == 1


def test_a_job_far_from_its_limit_or_with_the_notice_off_is_not_told(student, host, settings):
    running_job(student, minutes=60, started_ago=timedelta(minutes=30))
    send_notifications()
    assert of_kind(NotificationKind.JOB_NEAR_LIMIT) == []
    settings.JOB_NEAR_LIMIT_MINUTES = 0
    running_job(student, minutes=60, started_ago=timedelta(minutes=55))
    send_notifications()
    assert of_kind(NotificationKind.JOB_NEAR_LIMIT) == []


def test_a_user_who_turned_it_off_is_told_in_the_portal_only(student, host):
    email_kinds_set(user=student, kinds=[])
    running_job(student, minutes=60, started_ago=timedelta(minutes=55))
    send_notifications()
    [notice] = of_kind(NotificationKind.JOB_NEAR_LIMIT)
    assert notice.email == Notification.Email.SKIPPED
    assert mail.outbox == []


def test_the_notices_are_written_in_the_users_language(student, host):
    student.language = "zh-hant"
    student.save()
    job = running_job(student, minutes=60, started_ago=timedelta(minutes=55))
    send_notifications()
    [started] = of_kind(NotificationKind.JOB_STARTED)
    [near] = of_kind(NotificationKind.JOB_NEAR_LIMIT)
    assert started.title == f"工作 #{job.pk} 已在 {host.name} 上開始執行"
    assert near.title.startswith(f"工作 #{job.pk} 將於")
