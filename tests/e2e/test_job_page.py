import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs.services import job_cancel
from tests.factories import JobFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-much-better-passphrase-42"


def test_the_job_page_follows_the_status_without_a_reload(page, default_profile, image):
    user = UserFactory(username="m11007s05", must_change_password=False)
    user.set_password(PASSWORD)
    user.save()
    job = JobFactory(user=user, image=image)
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("m11007s05")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"/jobs/{job.pk}/")
    expect(page.get_by_test_id("status")).to_have_text("Queued")
    expect(page.get_by_role("link", name="Cancel job")).to_be_visible()
    page.evaluate("window.notReloaded = true")

    job_cancel(job=job, now=timezone.now())

    # The log polls every 5 s; the status, exit code and buttons come with it.
    expect(page.get_by_test_id("status")).to_have_text("Cancelled", timeout=15_000)
    expect(page.get_by_role("link", name="Cancel job")).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True
