"""A queued job that can no longer run anywhere (its profile's limit lowered under it, a GPU
taken out of service below its count, its owner no longer let on the host) says so in its
wait reason, its owner is told once in their language, and maintainers find it in admin."""

import pytest
from django.urls import reverse

from accounts.models import Notification, NotificationKind
from bookings.models import HostAccess
from jobs.models import Job, WaitReason
from jobs.scheduling import run_pass
from jobs.services import job_submit
from tests.factories import UserFactory, local

pytestmark = pytest.mark.django_db
NOW = local(2026, 3, 2, 10, 10)


@pytest.fixture(autouse=True)
def _no_usage_limits(settings):
    settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = 0


def submit(user, *, minutes=60, gpus=1, host=None) -> Job:
    return job_submit(
        user=user,
        command="python train.py",
        cpus=1,
        memory_gb=1,
        gpu_count=gpus,
        time_limit_minutes=minutes,
        host=host,
        now=NOW,
    )


def fill(host, user) -> None:
    """Every GPU of `host` busy, so a valid job would wait on capacity, not start."""
    for _ in host.active_gpus:
        submit(user)
    run_pass(now=NOW)


def fresh(job: Job) -> Job:
    job.refresh_from_db()
    return job


def notices_of(job: Job) -> list[Notification]:
    return list(
        Notification.objects.filter(kind=NotificationKind.JOB_CANNOT_RUN, key__endswith=f"job-{job.pk}")
    )


def test_a_job_queued_over_a_lowered_time_limit_says_the_profile_limit(student, host, default_profile):
    default_profile.job_time_limit_minutes = 600
    default_profile.save()
    fill(host, UserFactory(username="other"))
    job = submit(student, minutes=500)
    default_profile.job_time_limit_minutes = 120
    default_profile.save()
    for _ in range(3):
        run_pass(now=NOW)
    job = fresh(job)
    assert job.status == Job.Status.QUEUED
    assert job.wait_reason == WaitReason.NEVER
    assert job.waiting_for == (
        "no host can run it any more: the profile's limit is now 120 minutes, it asks for 500"
    )
    [notice] = notices_of(job)  # three passes, one notice
    assert "120 minutes" in notice.body
    assert notice.link == reverse("job-detail", kwargs={"pk": job.pk})


def test_a_gpu_taken_out_of_service_below_the_jobs_count_is_named(student, host, default_profile):
    default_profile.gpus = 2
    default_profile.save()
    other = UserFactory(username="other")
    fill(host, other)
    job = submit(student, gpus=2)
    gpu = host.active_gpus[1]
    gpu.is_active = False
    gpu.save()
    run_pass(now=NOW)
    job = fresh(job)
    assert job.wait_reason == WaitReason.NEVER
    assert job.wait_detail == "it asks for 2 GPUs, a host open to you has at most 1 in service"
    assert len(notices_of(job)) == 1


def test_a_user_who_lost_access_to_the_host_is_told(student, host):
    fill(host, UserFactory(username="other"))
    job = submit(student, host=host)
    HostAccess.objects.create(host=host).users.set([UserFactory(username="project1")])
    run_pass(now=NOW)
    job = fresh(job)
    assert job.wait_reason == WaitReason.NEVER
    assert job.wait_detail == "no host it may use is open to you any more"
    assert len(notices_of(job)) == 1


def test_the_notice_is_written_in_the_users_language(student, host, default_profile):
    student.language = "zh-hant"
    student.save()
    default_profile.job_time_limit_minutes = 600
    default_profile.save()
    fill(host, UserFactory(username="other"))
    job = submit(student, minutes=500)
    default_profile.job_time_limit_minutes = 120
    default_profile.save()
    run_pass(now=NOW)
    [notice] = notices_of(job)
    assert notice.title != f"Job #{job.pk} can no longer run"


def test_a_job_behind_a_drained_host_only_waits_and_nobody_is_told(student, host):
    from jobs.services import host_drain

    job = submit(student, host=host)
    host_drain(host=host, by=UserFactory(username="admin", is_staff=True), now=NOW)
    run_pass(now=NOW)
    job = fresh(job)
    assert job.wait_reason == WaitReason.NO_HOST
    assert notices_of(job) == []


def test_the_owner_cancels_it_in_one_step_from_its_page(client, student, host, default_profile):
    default_profile.job_time_limit_minutes = 600
    default_profile.save()
    fill(host, UserFactory(username="other"))
    job = submit(student, minutes=500)
    default_profile.job_time_limit_minutes = 120
    default_profile.save()
    run_pass(now=NOW)
    client.force_login(student)
    page = client.get(reverse("job-detail", kwargs={"pk": job.pk}))
    assert "no host can run it any more" in page.content.decode()
    client.post(reverse("job-cancel", kwargs={"pk": job.pk}))
    assert fresh(job).status == Job.Status.CANCELLED


def test_maintainers_filter_such_jobs_in_admin(admin_client, student, host, default_profile):
    default_profile.job_time_limit_minutes = 600
    default_profile.save()
    other = UserFactory(username="other")
    fill(host, other)
    stuck = submit(student, minutes=500)
    default_profile.job_time_limit_minutes = 120
    default_profile.save()
    run_pass(now=NOW)
    page = admin_client.get(reverse("admin:jobs_job_changelist") + "?cannot_run=yes")
    assert page.status_code == 200
    assert [job.pk for job in page.context["cl"].result_list] == [stuck.pk]
