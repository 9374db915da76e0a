from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from containers.commands import command_arguments
from jobs.models import Job
from jobs.services import host_drain, job_cancel, job_submit, queue_pause, queue_resume
from tests.factories import (
    CapabilityProfileFactory,
    HostFactory,
    ImageFactory,
    JobFactory,
    UserFactory,
    local,
)

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 2, 10, 10)


def submit(user, **kwargs):
    values = {"command": "python train.py --epochs 3", "cpus": 2, "memory_gb": 4, "gpu_count": 1}
    values.update(kwargs)
    values.setdefault("time_limit_minutes", 120)
    return job_submit(user=user, now=NOW, **values)


def messages_of(error: pytest.ExceptionInfo) -> str:
    return " ".join(error.value.messages)


def test_it_queues_a_job_with_what_was_asked(student, host, image):
    job = submit(student, cpus="2.5", memory_gb="8", time_limit_minutes="90")
    assert job.status == Job.Status.QUEUED
    assert (job.cpus, job.memory_gb, job.gpu_count, job.time_limit_minutes) == (Decimal("2.5"), 8, 1, 90)
    assert job.image == image and job.host is None and job.submitted_at == NOW
    assert job.reservation is None


def test_it_keeps_the_command_as_arguments_never_a_shell_line(student, host, image):
    job = submit(student, command="sh -c 'echo $HOME; rm -rf /' ; reboot")
    assert command_arguments(job.command) == ["sh", "-c", "echo $HOME; rm -rf /", ";", "reboot"]


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("command", "   ", "Give the command"),
        ("command", "echo 'unclosed", "cannot be read as arguments"),
        ("command", "echo \x00", "NUL"),
        ("time_limit_minutes", 0, "at least 1 minute"),
        ("time_limit_minutes", "ten", "must be a number"),
        ("time_limit_minutes", 30 * 24 * 60, "at most 2 weeks"),
        ("cpus", "nan", "finite"),
        ("memory_gb", "1.5", "whole number"),
    ],
)
def test_it_refuses_bad_input_with_a_clear_message(student, host, image, field, value, text):
    with pytest.raises(ValidationError) as error:
        submit(student, **{field: value})
    assert text in messages_of(error)
    assert not Job.objects.exists()


def test_it_applies_the_booking_quota(student, host, image):
    with pytest.raises(ValidationError) as error:
        submit(student, gpu_count=2)
    assert "Over the maximum required." in messages_of(error)


def test_it_applies_the_profile_time_limit(student, host, image, default_profile):
    default_profile.job_time_limit_minutes = 60
    default_profile.save()
    with pytest.raises(ValidationError) as error:
        submit(student, time_limit_minutes=61)
    assert "Your profile allows jobs of at most 60 minutes." in messages_of(error)
    assert submit(student, time_limit_minutes=60).time_limit_minutes == 60


def test_a_profile_may_allow_longer_jobs_than_the_default(student, host, image, default_profile, settings):
    default_profile.job_time_limit_minutes = 60
    default_profile.save()
    student.capability_profile = CapabilityProfileFactory(job_time_limit_minutes=600)
    student.save()
    assert submit(student, time_limit_minutes=600).time_limit_minutes == 600


def test_it_caps_how_many_jobs_a_user_keeps_waiting(student, host, image, default_profile):
    default_profile.queued_jobs = 2
    default_profile.save()
    submit(student)
    submit(student)
    with pytest.raises(ValidationError) as error:
        submit(student)
    assert "2 jobs waiting" in messages_of(error)
    assert Job.objects.filter(user=student).count() == 2


def test_it_uses_the_lab_queue_size_when_profiles_leave_it_empty(student, host, image, settings):
    settings.JOB_MAX_QUEUED = 1
    submit(student)
    with pytest.raises(ValidationError):
        submit(student)


def test_it_refuses_an_inactive_image(student, host, image):
    retired = ImageFactory(reference="lab/old:1", is_active=False)
    with pytest.raises(ValidationError) as error:
        submit(student, image=retired.reference)
    assert "Not the available image!" in messages_of(error)


def test_it_refuses_a_job_bigger_than_the_whole_host(host, image):
    CapabilityProfileFactory(name="open", is_default=True)  # every limit: the host maximum
    big = UserFactory(username="bigjob")
    with pytest.raises(ValidationError) as error:
        submit(big, gpu_count=3)
    assert "Over the maximum required." in messages_of(error)


def test_a_job_for_any_host_needs_one_host_that_allows_it(student, image):
    HostFactory(name="small", cpus=16, ram_gb=64, swap_gb=16, gpus=0)
    HostFactory(name="gpu-big", cpus=16, ram_gb=64, swap_gb=16, gpus=2)
    assert submit(student, gpu_count=1).host is None
    with pytest.raises(ValidationError):
        submit(student, gpu_count=1, host="small")


def test_it_refuses_a_host_under_maintenance_or_drained(student, host, image, django_user_model):
    host.accepting_bookings = False
    host.save()
    with pytest.raises(ValidationError) as error:
        submit(student, host=host)
    assert "maintenance" in messages_of(error)
    host.accepting_bookings = True
    host.save()
    host_drain(host=host, by=student, now=NOW)
    with pytest.raises(ValidationError) as error:
        submit(student, host=host.name)
    assert "drained" in messages_of(error)


def test_cancelling_a_queued_job_takes_it_off_the_queue(student, host, image):
    job = submit(student)
    job_cancel(job=job, now=NOW)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.finished_at == NOW


def test_a_finished_job_cannot_be_cancelled(student, host, image):
    job = JobFactory(user=student, status=Job.Status.SUCCEEDED, finished_at=NOW)
    with pytest.raises(ValidationError):
        job_cancel(job=job, now=NOW)


def test_pausing_records_who_and_since_when(student, host):
    state = queue_pause(by=student, reason="driver update", now=NOW)
    assert (state.paused, state.paused_by, state.paused_since, state.reason) == (
        True,
        student,
        NOW,
        "driver update",
    )
    state = queue_resume(by=student)
    assert not state.paused and state.paused_by is None
