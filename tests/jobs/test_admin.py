from functools import partial

import pytest
from django.urls import reverse

from jobs.models import HostDrain, Job
from jobs.selectors import queue_state
from tests.admin_helpers import message_texts, post_action
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

run_action = partial(post_action, changelist=reverse("admin:jobs_job_changelist"))


def test_a_maintainer_cancels_anyones_queued_job(admin_client, student, image):
    job = JobFactory(user=student, image=image)
    finished = JobFactory(user=student, image=image, status=Job.Status.SUCCEEDED)
    response = run_action(admin_client, "cancel", job, finished)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    messages = message_texts(response)
    assert "Cancelled: 1." in messages
    assert any("finished already" in text for text in messages)


def test_the_changelist_and_statistics_render(admin_client, student, image):
    JobFactory(user=student, image=image)
    assert admin_client.get(reverse("admin:jobs_job_changelist")).status_code == 200
    page = admin_client.get(reverse("admin:jobs_job_statistics")).content.decode()
    assert student.username in page and "Jobs waiting" in page


def test_pause_records_the_maintainer_and_resume_clears_it(admin_client, admin_user):
    admin_client.post(reverse("admin:jobs_job_pause"), {"reason": "driver update"})
    state = queue_state()
    assert state.paused and state.paused_by == admin_user and state.paused_since is not None
    page = admin_client.get(reverse("admin:jobs_job_statistics")).content.decode()
    assert "Paused" in page and admin_user.username in page
    admin_client.post(reverse("admin:jobs_job_resume"))
    assert not queue_state().paused


def test_pause_is_post_only_and_staff_only(admin_client, client, student):
    assert admin_client.get(reverse("admin:jobs_job_pause")).status_code == 405
    client.force_login(student)
    client.post(reverse("admin:jobs_job_pause"))
    assert not queue_state().paused


def test_draining_a_host_records_who(admin_client, admin_user, host):
    admin_client.post(reverse("admin:jobs_hostdrain_add"), {"host": host.pk})
    drain = HostDrain.objects.get(host=host)
    assert drain.drained_by == admin_user
    run_action_drain = partial(post_action, changelist=reverse("admin:jobs_hostdrain_changelist"))
    run_action_drain(admin_client, "undrain", drain)
    assert not HostDrain.objects.exists()
