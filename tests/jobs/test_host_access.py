"""A host a maintainer restricted to some users takes their jobs only, as it takes their
bookings only (tests/bookings/test_host_access.py): a student it does not list cannot
queue a job there by name, through the API or the form, or by leaving the choice of host
to the scheduler."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from bookings.models import HostAccess
from jobs.models import Job
from jobs.scheduling import run_pass
from jobs.services import job_submit
from tests.api_helpers import token_client
from tests.factories import HostFactory, UserFactory, local

pytestmark = pytest.mark.django_db
NOW = local(2026, 3, 2, 10, 10)
JOB = {"command": "python train.py", "cpus": 1, "memory_gb": 1, "gpu_count": 1, "time_limit_minutes": 60}


@pytest.fixture
def project1(db):
    return UserFactory(username="project1")


@pytest.fixture
def a100(project1):
    """A bigger host kept for one project; first by name, so a scheduler that ignored the
    restriction would take it first."""
    a100 = HostFactory(name="a100", cpus=32, ram_gb=256, gpus=4)
    HostAccess.objects.create(host=a100).users.set([project1])
    return a100


def submit(user, **kwargs) -> Job:
    return job_submit(user=user, now=NOW, **(JOB | kwargs))


def test_a_job_naming_a_host_closed_to_the_student_is_refused(student, host, a100):
    with pytest.raises(ValidationError, match="a100 is reserved for some users"):
        submit(student, host=a100)
    assert not Job.objects.exists()


def test_the_api_refuses_it_the_same_way(student, host, a100):
    response = token_client(student).post("/api/v1/jobs/", JOB | {"host": "a100"}, format="json")
    assert response.status_code == 400
    assert "reserved for some users" in str(response.json())
    assert not Job.objects.exists()


def test_the_job_forms_offer_and_take_only_open_hosts(client, student, host, a100, image):
    client.force_login(student)
    page = client.get(reverse("job-new"))
    assert list(page.context["form"].fields["host"].queryset) == [host]
    assert list(page.context["upload_form"].fields["host"].queryset) == [host]

    client.post(reverse("job-new"), JOB | {"image": image.pk, "host": a100.pk})
    assert not Job.objects.exists()


def test_the_scheduler_starts_a_job_with_no_host_on_a_host_open_to_its_owner(student, host, a100):
    job = submit(student)
    run_pass(now=NOW)
    job.refresh_from_db()
    assert job.reservation.host == host


def test_a_job_whose_only_schedulable_host_is_closed_to_its_owner_waits(student, host, a100):
    job = submit(student)
    host.accepting_bookings = False  # maintenance: only a100 could run it now
    host.save(update_fields=["accepting_bookings"])
    run_pass(now=NOW)
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.reservation is None


def test_a_user_the_host_lists_runs_jobs_there(project1, host, a100, student):
    job = submit(project1, host=a100)
    run_pass(now=NOW)
    job.refresh_from_db()
    assert job.reservation.host == a100
