"""The student's page, API and `aivc request` for requests for more."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.grant_services import limit_request_approve, limit_request_create
from accounts.models import LimitKind, LimitRequest
from tests.api_helpers import assert_error_shape, token_client
from tests.factories import CapabilityProfileFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = reverse("limit-requests")


def until(days: int = 10) -> str:
    return f"{timezone.localdate() + timedelta(days=days):%Y-%m-%d}"


def test_a_student_asks_on_the_page_and_sees_the_request(client, student):
    client.force_login(student)
    response = client.post(
        URL, {"kind": "budget", "gpu_hours_per_week": "40", "until": until(), "reason": "Thesis deadline."}
    )
    assert response.status_code == 302
    made = LimitRequest.objects.get(user=student)
    assert made.kind == "budget" and made.gpu_hours_per_week == 40
    page = client.get(URL).content.decode()
    assert f'data-testid="limit-request-{made.pk}"' in page and "40.0 GPU-hours per week" in page


def test_bad_input_on_the_page_is_shown_and_keeps_what_was_typed(client, student):
    client.force_login(student)
    response = client.post(
        URL, {"kind": "budget", "gpu_hours_per_week": "-3", "until": until(), "reason": "Because I want it."}
    )
    body = response.content.decode()
    assert response.status_code == 200 and "Enter a number above 0." in body
    assert "Because I want it." in body
    past = client.post(URL, {"kind": "boost", "until": until(-2), "reason": "late"})
    assert "must not be in the past" in past.content.decode()
    assert not LimitRequest.objects.exists()


def test_the_page_shows_what_is_granted_now(client, student):
    maintainer = UserFactory(username="maintainer", is_staff=True)
    request = limit_request_create(
        user=student, kind=LimitKind.BOOST, until=timezone.localdate(), reason="Demo day."
    )
    limit_request_approve(request=request, by=maintainer)
    client.force_login(student)
    assert "priority boost" in client.get(URL).content.decode().split('data-testid="grants"')[1]


def test_the_page_needs_a_login_and_takes_only_get_and_post(client, student):
    assert client.get(URL).url.startswith(reverse("login"))
    client.force_login(student)
    assert client.put(URL).status_code == 405


def test_another_students_requests_are_not_shown(client, student, default_profile):
    limit_request_create(user=student, kind=LimitKind.BOOST, until=timezone.localdate(), reason="secret plan")
    client.force_login(UserFactory(username="other"))
    assert "secret plan" not in client.get(URL).content.decode()


def test_the_api_lists_and_creates_only_ones_own(student, default_profile):
    api = token_client(student)
    thesis = CapabilityProfileFactory(name="thesis", gpus=2)
    made = api.post(
        "/api/v1/limit-requests/",
        {"kind": "profile", "profile": "thesis", "until": until(30), "reason": "Final runs."},
        format="json",
    )
    assert made.status_code == 201, made.json()
    body = made.json()
    assert body["status"] == "pending" and body["profile"] == "thesis" and body["summary"] == "profile thesis"
    assert LimitRequest.objects.get(pk=body["id"]).profile == thesis
    assert [row["id"] for row in api.get("/api/v1/limit-requests/").json()["results"]] == [body["id"]]

    other = token_client(UserFactory(username="other"), name="other")
    assert other.get(f"/api/v1/limit-requests/{body['id']}/").status_code == 404
    assert other.get("/api/v1/limit-requests/").json()["results"] == []
    assert APIClient().get("/api/v1/limit-requests/").status_code in (401, 403)
    assert api.delete(f"/api/v1/limit-requests/{body['id']}/").status_code == 405


def test_the_api_refuses_bad_input_in_the_error_shape(student):
    api = token_client(student)
    for body in (
        {"kind": "budget", "gpu_hours_per_week": "-3", "until": until(), "reason": "x"},
        {"kind": "budget", "gpu_hours_per_week": "10", "until": until(-1), "reason": "x"},
        {"kind": "caps", "until": until(), "reason": "x"},
        {"kind": "more", "until": until(), "reason": "x"},
        {"kind": "boost", "until": "next week", "reason": "x"},
    ):
        response = api.post("/api/v1/limit-requests/", body, format="json")
        assert response.status_code == 400, body
        assert_error_shape(response.json())
    assert not LimitRequest.objects.exists()
