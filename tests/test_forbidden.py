"""A student who opens a staff page gets a page that explains, and the log gets one line."""

import logging

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_a_student_on_a_staff_page_gets_a_proper_403_page(client, student):
    client.force_login(student)
    answer = client.get(reverse("reports"))
    assert answer.status_code == 403
    page = answer.content.decode()
    assert 'data-testid="forbidden"' in page
    assert reverse("dashboard") in page


def test_a_403_is_logged_once_without_a_traceback(client, student, caplog):
    client.force_login(student)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        client.get(reverse("reports"))
    forbidden = [record for record in caplog.records if getattr(record, "status_code", None) == 403]
    assert len(forbidden) == 1
    handler = logging.getLogger().handlers[0]
    assert handler.filter(forbidden[0])
    assert forbidden[0].exc_info is None
    assert not logging.getLogger("django").handlers
