import pytest
from django.urls import reverse

from jobs import logs
from jobs.models import Job
from tests.api_helpers import assert_error_shape, token_client
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(student):
    return token_client(student)


@pytest.fixture(autouse=True)
def job_logs(settings, tmp_path):
    settings.JOB_LOG_ROOT = tmp_path / "job-logs"


def submit(api, **overrides):
    data = {"command": "python train.py --lr 0.1", "cpus": 2, "memory_gb": 4, "gpu_count": 1}
    return api.post("/api/v1/jobs/", data | {"time_limit_minutes": 60} | overrides, format="json")


def test_it_queues_a_job_with_the_forms_inputs(api, student, host, image):
    response = submit(api)
    assert response.status_code == 201, response.json()
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert job.user == student and job.status == Job.Status.QUEUED
    assert body["status"] == "queued" and body["image"] == image.reference and body["host"] is None
    assert body["command"] == "python train.py --lr 0.1" and body["can_cancel"] is True
    assert body["queue_position"] == 1


def test_a_refused_submit_is_the_one_error_body(api, host, image):
    response = submit(api, gpu_count=5)
    assert response.status_code == 400
    body = response.json()
    assert_error_shape(body)
    assert "Over the maximum required." in str(body)
    assert not Job.objects.exists()


def test_it_lists_only_the_users_jobs_and_filters_by_status(api, student, image):
    mine = JobFactory(user=student, image=image)
    JobFactory(user=student, image=image, status=Job.Status.SUCCEEDED)
    JobFactory(user=UserFactory(username="other"), image=image)
    body = api.get("/api/v1/jobs/?status=queued").json()
    rows = body["results"] if isinstance(body, dict) else body
    assert [row["id"] for row in rows] == [mine.pk]


def test_another_users_job_answers_404_everywhere(api, image):
    other = JobFactory(user=UserFactory(username="other"), image=image)
    assert api.get(f"/api/v1/jobs/{other.pk}/").status_code == 404
    assert api.get(f"/api/v1/jobs/{other.pk}/log/").status_code == 404
    assert api.post(f"/api/v1/jobs/{other.pk}/cancel/").status_code == 404
    other.refresh_from_db()
    assert other.status == Job.Status.QUEUED


def test_cancel_and_log_tail(api, student, image):
    job = JobFactory(user=student, image=image)
    logs.log_store(job=job, chunks=[b"one\ntwo\nthree\n"])
    assert api.get(f"/api/v1/jobs/{job.pk}/log/?tail=2").json()["log"] == "two\nthree"
    assert api.get(f"/api/v1/jobs/{job.pk}/log/?tail=x").status_code == 400
    response = api.post(f"/api/v1/jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = api.post(f"/api/v1/jobs/{job.pk}/cancel/")
    assert again.status_code == 400 and "finished already" in str(again.json())


def test_anonymous_callers_are_refused(client):
    assert client.get("/api/v1/jobs/").status_code in (401, 403)


def test_the_schema_documents_the_job_paths(admin_client):
    schema = admin_client.get(reverse("api-schema")).content.decode()
    assert "/api/v1/jobs/{id}/log/" in schema and "/api/v1/jobs/{id}/cancel/" in schema
