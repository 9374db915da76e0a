"""The DoPQ upload form on the job submit page."""

import html

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs.build_services import job_submit_upload
from jobs.models import Job
from tests.jobs.conftest import builds_fenced
from tests.jobs.dopq_zips import DOCKERFILE, dopq_zip
from tests.jobs.test_uploads import zip_bomb

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def builds_on(settings, tmp_path):
    builds_fenced(settings, tmp_path)


@pytest.fixture
def owner_client(client, student):
    client.force_login(student)
    return client


def post_zip(client, host, data: bytes):
    upload = SimpleUploadedFile("job.zip", data, content_type="application/zip")
    return client.post(
        reverse("job-upload"), {"upload": upload, "host": host.pk, "cpus": "1", "time_limit_minutes": "30"}
    )


def test_uploading_a_zip_queues_a_job_whose_page_shows_the_build(owner_client, student, host, fake_runtime):
    response = post_zip(owner_client, host, dopq_zip())
    job = Job.objects.get(user=student)
    assert response.status_code == 302 and response.url == reverse("job-detail", args=[job.pk])
    page = owner_client.get(response.url).content.decode()
    assert 'data-testid="build-status"' in page and "mnist" in page


def test_a_bad_zip_is_shown_as_an_error_on_the_form_and_queues_nothing(owner_client, host):
    response = post_zip(owner_client, host, dopq_zip(run_params={"privileged": True, "volumes": {}}))
    assert response.status_code == 200
    assert "may not set privileged, volumes" in response.content.decode()
    assert not Job.objects.exists()


def test_a_zip_over_the_limit_is_refused_before_it_is_read(owner_client, host, settings):
    settings.JOB_UPLOAD_MAX_BYTES = 100
    response = post_zip(owner_client, host, dopq_zip())
    assert response.status_code == 200 and "larger than" in response.content.decode()
    assert not Job.objects.exists()


def test_the_submit_page_says_when_the_lab_builds_no_uploads(owner_client, settings):
    settings.JOB_BUILDS_ALLOWED = False
    page = owner_client.get(reverse("job-new")).content.decode()
    assert 'data-testid="builds-off"' in page and 'data-testid="upload-form"' not in page


def test_the_upload_needs_a_signed_in_user(client, host):
    response = post_zip(client, host, dopq_zip())
    assert response.status_code == 302 and "login" in response.url


def test_the_builds_admin_lists_an_uploads_build(admin_client, student, host, fake_runtime):
    job = job_submit_upload(user=student, upload=dopq_zip(), host=host, cpus=1, time_limit_minutes=30)
    page = admin_client.get(reverse("admin:jobs_jobbuild_changelist")).content.decode()
    assert "mnist" in page and student.username in page
    detail = admin_client.get(reverse("admin:jobs_jobbuild_change", args=[job.build.pk]))
    assert detail.status_code == 200


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (zip_bomb(99 * 2**20), "times its size"),
        (dopq_zip(dockerfile="FROM 9b764e\n"), "by its id (9b764e)"),
        (dopq_zip(dockerfile=f"{DOCKERFILE}ADD http://127.0.0.1:8000/ /s\n"), "may not fetch"),
    ],
)
def test_an_attacking_zip_is_a_clear_error_on_the_form_and_stores_nothing(
    owner_client, host, settings, data, text
):
    response = post_zip(owner_client, host, data)
    assert response.status_code == 200 and text in html.unescape(response.content.decode())
    assert not Job.objects.exists() and not list(settings.JOB_BUILD_CONTEXT_ROOT.glob("*"))
