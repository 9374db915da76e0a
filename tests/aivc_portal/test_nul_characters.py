"""A NUL character in a query string or a form: PostgreSQL refuses it in any text it is
given, so without a fence an admin filter with `%00` answered 500 (the user and login-log
lists, on PostgreSQL)."""

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(django_user_model):
    client = Client(raise_request_exception=False)
    client.force_login(django_user_model.objects.create_superuser("root", password="x" * 20))
    return client


def changelists() -> list[str]:
    return [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
    ]


@pytest.mark.parametrize("query", ["q=%00", "username=m11%00", "host__name=%00", "%00=1"])
def test_no_admin_list_filtered_or_searched_with_a_nul_answers_500(superuser_client, query):
    answers = {url: superuser_client.get(f"{url}?{query}").status_code for url in changelists()}
    assert not [url for url, status in answers.items() if status >= 500]


def test_an_admin_filter_with_a_nul_is_a_clear_400(superuser_client):
    answer = superuser_client.get(reverse("admin:accounts_user_changelist") + "?username=m11%00")
    assert answer.status_code == 400
    assert b"NUL character" in answer.content


def test_a_form_posted_with_a_nul_is_refused_before_any_view_runs(client, student):
    client.force_login(student)
    answer = client.post(
        reverse("reservation-new"),
        "host=1&extra_command=a%00b",
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status_code == 400


def test_ordinary_queries_pass(client, student):
    client.force_login(student)
    assert client.get(reverse("dashboard") + "?page=2&q=caf%C3%A9").status_code == 200


def test_the_api_answers_a_nul_in_its_own_error_format(client, student):
    client.force_login(student)
    answer = client.get("/api/v1/reservations/?status=%00")
    assert answer.status_code == 400
    assert answer.json()["code"] == "nul_character"


@pytest.mark.django_db
def test_a_nul_in_an_api_query_is_refused_with_the_apis_json_error(client):
    # Found by the schema fuzz (tests/test_api_schema.py): the 400 was an HTML page.
    from tests.factories import UserFactory

    client.force_login(UserFactory())
    response = client.get("/api/v1/earliest-fit/", {"host": "gpu\x00"})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "nul_character"
