import pytest
from django.urls import reverse

from tests.factories import ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_an_anonymous_visitor_is_sent_to_login(client):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_a_user_who_must_change_the_password_is_sent_to_the_form_first(client):
    user = UserFactory(must_change_password=True)
    client.force_login(user)
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302 and response.url == reverse("password_change")


def test_changing_the_password_lifts_the_requirement_and_keeps_the_session(client):
    user = UserFactory(must_change_password=True)
    client.force_login(user)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "correct-horse-battery",
            "new_password1": "gpu-queue-tangerine-42",
            "new_password2": "gpu-queue-tangerine-42",
        },
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert not user.must_change_password and user.check_password("gpu-queue-tangerine-42")
    assert client.get(reverse("dashboard")).status_code == 200


def test_a_wrong_old_password_is_shown_not_a_crash(client):
    user = UserFactory(must_change_password=True)
    client.force_login(user)
    response = client.post(
        reverse("password_change"),
        {"old_password": "nope", "new_password1": "x-y-z-12345-abc", "new_password2": "x-y-z-12345-abc"},
    )
    assert response.status_code == 200
    assert "old password was entered incorrectly" in response.content.decode()


def test_the_dashboard_lists_only_the_users_own_reservations(client):
    own = ReservationFactory()
    other = ReservationFactory(start=own.start.replace(day=5), end=own.end.replace(day=5))
    client.force_login(own.user)
    response = client.get(reverse("dashboard"))
    # Both reservations lie in the past of the real clock the dashboard reads.
    assert response.context["past"] == [own]
    assert response.context["current"] == response.context["upcoming"] == []
    assert other.user.username not in response.content.decode()


def test_the_dashboard_refuses_a_post(client):
    client.force_login(UserFactory())
    assert client.post(reverse("dashboard")).status_code == 405
