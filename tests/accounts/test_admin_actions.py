from functools import partial

import pytest
from django.urls import reverse

from tests.admin_helpers import message_texts, post_action
from tests.factories import CapabilityProfileFactory, UserFactory

CHANGELIST = reverse("admin:accounts_user_changelist")

run_action = partial(post_action, changelist=CHANGELIST)


@pytest.mark.django_db
def test_reset_password_shows_a_one_time_password_once_and_forces_a_change(admin_client, student, caplog):
    response = run_action(admin_client, "reset_password", student)
    [message] = message_texts(response)
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
