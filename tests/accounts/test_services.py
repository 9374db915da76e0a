import pytest
from django.core.exceptions import ValidationError

from accounts.models import User
from accounts.services import user_create, user_reset_password, users_create_bulk
from tests.factories import CapabilityProfileFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_an_account_id_is_stored_lower_case_and_logs_in_in_any_case(client):
    user, password = user_create(username="  M11007S05 ")
    assert user.username == "m11007s05"
    assert client.login(username="M11007S05", password=password)


@pytest.mark.argon2
def test_passwords_are_hashed_with_argon2():
    user, _ = user_create(username="m1", password="a-long-passphrase")
    assert user.password.startswith("argon2$")
    assert "a-long-passphrase" not in user.password
    assert user.check_password("a-long-passphrase")


def test_bulk_creation_makes_must_change_accounts_with_free_ports_and_skips_existing():
    UserFactory(username="m2")
    profile = CapabilityProfileFactory()
    created = users_create_bulk(usernames=["m1", "M2", "m3", "m1"], capability_profile=profile)
    assert [user.username for user, _ in created] == ["m1", "m3"]
    for user, password in created:
        assert user.must_change_password and user.check_password(password)
        assert user.capability_profile == profile
    ports = list(User.objects.values_list("forward_port", flat=True))
    assert len(set(ports)) == 3


def test_bulk_creation_is_all_or_nothing_on_a_bad_id():
    with pytest.raises(ValidationError):
        users_create_bulk(usernames=["good1", "bad id!"])
    assert not User.objects.filter(username="good1").exists()


def test_a_password_reset_forces_a_change_at_next_login():
    user = UserFactory()
    password = user_reset_password(user=user)
    user.refresh_from_db()
    assert user.must_change_password and user.check_password(password)
