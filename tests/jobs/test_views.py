from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from bookings.services import reservation_extend
from jobs import logs
from jobs.models import Job
from jobs.scheduling import run_pass
from jobs.services import job_submit
from tests.factories import HostFactory, JobFactory, UserFactory, local

pytestmark = pytest.mark.django_db


@pytest.fixture
def job_logs(settings, tmp_path):
    settings.JOB_LOG_ROOT = tmp_path / "job-logs"
    return settings.JOB_LOG_ROOT


@pytest.fixture
def owner_client(client, student):
    client.force_login(student)
    return client


def test_submitting_the_form_queues_a_job(owner_client, student, host, image):
    response = owner_client.post(
        reverse("job-new"),
        {
            "image": image.pk,
            "command": "python train.py",
            "host": "",
            "cpus": "2",
            "memory_gb": "4",
            "gpu_count": "1",
            "time_limit_minutes": "30",
        },
    )
    job = Job.objects.get(user=student)
    assert response.status_code == 302 and response.url == reverse("job-detail", args=[job.pk])
    assert job.status == Job.Status.QUEUED and job.time_limit_minutes == 30


def test_a_refused_submit_shows_why_and_keeps_the_input(owner_client, host, image):
    response = owner_client.post(
        reverse("job-new"),
        {
            "image": image.pk,
            "command": "python x.py",
            "cpus": "1",
            "memory_gb": "1",
            "gpu_count": "9",
            "time_limit_minutes": "30",
        },
    )
    assert response.status_code == 200
    assert "Over the maximum required." in response.content.decode()
    assert not Job.objects.exists()


def test_my_jobs_lists_position_and_planned_start(owner_client, student, image):
    JobFactory(user=student, image=image)
    response = owner_client.get(reverse("job-list"))
    assert response.status_code == 200
    assert 'data-testid="waiting"' in response.content.decode()


@pytest.mark.parametrize("name", ["job-detail", "job-log-tail", "job-cancel", "job-log-download"])
def test_another_users_job_answers_404(owner_client, image, name, job_logs):
    other = JobFactory(user=UserFactory(username="other"), image=image)
    logs.log_store(job=other, chunks=[b"secret\n"])
    assert owner_client.get(reverse(name, args=[other.pk])).status_code == 404


def test_another_user_cannot_cancel_by_post(owner_client, image):
    other = JobFactory(user=UserFactory(username="other"), image=image)
    assert owner_client.post(reverse("job-cancel", args=[other.pk])).status_code == 404
    other.refresh_from_db()
    assert other.status == Job.Status.QUEUED


@pytest.mark.parametrize("name", ["job-list", "job-new"])
def test_anonymous_users_are_sent_to_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and reverse("login") in response.url


def test_wrong_methods_are_refused(owner_client, student, image):
    job = JobFactory(user=student, image=image)
    assert owner_client.post(reverse("job-detail", args=[job.pk])).status_code == 405
    assert owner_client.put(reverse("job-new")).status_code == 405


def test_the_owner_cancels_a_queued_job(owner_client, student, image):
    job = JobFactory(user=student, image=image)
    response = owner_client.post(reverse("job-cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


def test_the_job_page_shows_the_log_tail_and_offers_the_full_log(owner_client, student, image, job_logs):
    job = JobFactory(user=student, image=image, status=Job.Status.SUCCEEDED)
    logs.log_store(job=job, chunks=[b"".join(f"line {n}\n".encode() for n in range(1000))])
    page = owner_client.get(reverse("job-detail", args=[job.pk]) + "?tail=5").content.decode()
    assert "line 999" in page and "line 994" not in page
    download = owner_client.get(reverse("job-log-download", args=[job.pk]))
    assert b"line 0\n" in b"".join(download.streaming_content)


def test_the_stored_log_is_capped_keeping_its_end(student, image, job_logs, settings):
    settings.JOB_LOG_MAX_BYTES = 100
    job = JobFactory(user=student, image=image)
    logs.log_store(job=job, chunks=[b"x" * 500, b"the end\n"])
    job.refresh_from_db()
    assert job.log_size == 100 and job.log_truncated
    assert logs.log_path(job.pk).read_bytes().endswith(b"the end\n")


def test_the_timeline_shows_job_blocks_as_jobs_and_others_anonymously(owner_client, student, host, image):
    from datetime import timedelta

    from django.utils import timezone

    from bookings.models import Reservation
    from tests.factories import ReservationFactory

    now = timezone.now()
    window = {"start": now - timedelta(minutes=5), "end": now + timedelta(hours=2)}
    ReservationFactory(
        user=UserFactory(username="m11299999"),
        host=host,
        kind=Reservation.Kind.JOB,
        gpus=[host.gpus.get(index=1)],
        **window,
    )
    ReservationFactory(
        user=student, host=host, kind=Reservation.Kind.JOB, gpus=[host.gpus.get(index=0)], **window
    )
    page = owner_client.get(reverse("timeline")).content.decode()
    assert "m11299999" not in page
    assert 'class="tl-block job"' in page and 'class="tl-block own job"' in page
    assert f'href="{reverse("job-list")}"' in page


def test_the_job_pages_speak_traditional_chinese(owner_client, student, image, settings):
    JobFactory(user=student, image=image, status=Job.Status.TIMED_OUT)
    owner_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hant"
    page = owner_client.get(reverse("job-list")).content.decode()
    assert "我的工作" in page and "逾時" in page
    assert "提交工作" in owner_client.get(reverse("job-new")).content.decode()


@pytest.fixture
def running_job_reservation(student, host, image, default_profile):
    now = local(2026, 3, 2, 10, 10)
    job = job_submit(
        user=student,
        command="python train.py",
        cpus=1,
        memory_gb=1,
        gpu_count=0,
        time_limit_minutes=60,
        now=now,
    )
    run_pass(now=now)
    job.refresh_from_db()
    return job.reservation


def test_a_jobs_reservation_is_not_a_booking_page_its_owner_can_extend(owner_client, running_job_reservation):
    # Extending the hidden reservation behind a job would stretch the job past the time
    # limit its owner's profile allows.
    reservation = running_job_reservation
    end = reservation.end
    for name in ("reservation-detail", "reservation-extend", "reservation-release", "reservation-cancel"):
        assert owner_client.get(reverse(name, args=[reservation.pk])).status_code in (404, 405), name
    later = timezone.localtime(end + timedelta(days=6))
    response = owner_client.post(
        reverse("reservation-extend", args=[reservation.pk]),
        {"end_date": later.date().isoformat(), "end_time": later.strftime("%H:00")},
    )
    assert response.status_code == 404
    reservation.refresh_from_db()
    assert reservation.end == end


def test_the_extend_service_refuses_a_jobs_reservation(running_job_reservation):
    with pytest.raises(ValidationError, match="cannot be extended"):
        reservation_extend(reservation=running_job_reservation, end="1-day")


def test_the_job_form_suggests_no_gpus_in_a_lab_without_gpus(owner_client, default_profile):
    HostFactory(name="vm", gpus=0)
    default_profile.memory_gb = 2
    default_profile.save()
    form = owner_client.get(reverse("job-new")).context["form"]
    assert (form["gpu_count"].value(), form["memory_gb"].value()) == (0, 2)


def test_the_log_poll_sends_the_status_exit_code_and_buttons(owner_client, student, image, job_logs):
    job = JobFactory(user=student, image=image)
    running = owner_client.get(reverse("job-log-tail", args=[job.pk]))
    assert running.status_code == 200
    assert 'id="job-status"' in running.content.decode() and "Cancel job" in running.content.decode()
    Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED, exit_code=3, finished_at=timezone.now())
    finished = owner_client.get(reverse("job-log-tail", args=[job.pk]))
    page = finished.content.decode()
    # 286: htmx swaps this last answer in and stops polling.
    assert finished.status_code == 286
    assert 'id="job-exit-code" hx-swap-oob="true" data-testid="exit-code">3<' in page
    assert "Failed" in page and "Cancel job" not in page
