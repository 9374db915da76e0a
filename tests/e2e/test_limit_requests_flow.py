"""A student asks for more on the requests page: real Chromium against a live server."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import LimitRequest
from tests.e2e.test_student_flow import first_login_student, signed_in  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_student_asks_for_a_bigger_budget_before_a_deadline(signed_in, screenshot):  # noqa: F811
    page = signed_in
    page.get_by_role("link", name="Profile").click()
    page.get_by_role("link", name="Ask for more.", exact=False).click()
    page.get_by_label("What you need").select_option("budget")
    page.get_by_label("GPU-hours per week").fill("40")
    page.get_by_label("Last day").fill(f"{timezone.localdate() + timedelta(days=14):%Y-%m-%d}")
    page.get_by_label("Why").fill("Thesis deadline; the ablations need two more runs.")
    page.get_by_role("button", name="Send the request").click()

    expect(page.get_by_text("Your request was sent")).to_be_visible()
    made = LimitRequest.objects.get()
    expect(page.get_by_test_id(f"limit-request-{made.pk}")).to_contain_text("40.0 GPU-hours per week")
    screenshot(page, "limit-requests")
