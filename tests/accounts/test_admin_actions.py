import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from tests.factories import CapabilityProfileFactory, UserFactory

CHANGELIST = reverse("admin:accounts_user_changelist")


def run_action(client, action: str, *objects, **extra):
    data = {"action": action, ACTION_CHECKBOX_NAME: [obj.pk for obj in objects], **extra}
    return client.post(CHANGELIST, data, follow=True)


@pytest.mark.django_db
def test_reset_password_shows_a_one_time_password_once_and_forces_a_change(admin_client, student, caplog):
    response = run_action(admin_client, "reset_password", student)
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    password = message.split("one-time password ")[1].split(" ")[0]
    student.refresh_from_db()
    assert student.check_password(password)
    assert student.must_change_password
    assert password not in caplog.text


@pytest.mark.django_db
def test_assign_profile_asks_for_the_profile_then_assigns_it(admin_client, student, default_profile):
    other = UserFactory(username="m11107s01")
    power = CapabilityProfileFactory(name="power", cpus=32)
    page = run_action(admin_client, "assign_profile", student, other)
    assert b"The default profile" in page.content
    run_action(admin_client, "assign_profile", student, other, apply="Assign", capability_profile=power.pk)
    student.refresh_from_db()
    other.refresh_from_db()
    assert student.capability_profile == power
    assert other.capability_profile == power
    run_action(admin_client, "assign_profile", student, apply="Assign", capability_profile="")
    student.refresh_from_db()
    assert student.capability_profile is None
