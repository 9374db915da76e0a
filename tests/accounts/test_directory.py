"""Directory logins (accounts/directory.py) against a real slapd that the tests start: the
login page and the API's password login, with the directory up, refusing, and stopped."""

import logging

import pytest
from axes.models import AccessAttempt
from django.urls import reverse

from tests.factories import UserFactory
from tests.ldap_server import (
    PEOPLE,
    PEOPLE_IN_DIRECTORY,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    require_ldap_tools,
)

pytestmark = [pytest.mark.ldap, pytest.mark.django_db]
LOCAL_PASSWORD = "correct-horse-battery"  # the factories' local password
ADA_PASSWORD = PEOPLE_IN_DIRECTORY["ada"][0]


@pytest.fixture(scope="session")
def slapd(tmp_path_factory):
    require_ldap_tools()
    server = Slapd(tmp_path_factory.mktemp("slapd")).start()
    yield server
    server.stop()


def use_directory(settings, uri: str, *, create_users: bool = False, bind_password: str = SERVICE_PASSWORD):
    """What settings.py does with LDAP_SERVER_URI and the other LDAP_* variables set."""
    from aivc_portal.directory_settings import directory_settings

    values = directory_settings(
        server_uri=uri,
        bind_dn=SERVICE_DN,
        bind_password=bind_password,
        search_base=PEOPLE,
        user_filter="(uid=%(user)s)",
        create_users=create_users,
        start_tls=False,
        timeout=2,
    )
    for name, value in values.items():
        setattr(settings, name, value)
    settings.LDAP_SERVER_URI = uri
    settings.AUTHENTICATION_BACKENDS = [
        "accounts.backends.LoginThrottleBackend",
        "accounts.directory.DirectoryBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]


@pytest.fixture
def directory(settings, slapd):
    use_directory(settings, slapd.uri)
    return slapd


def log_in(client, username: str, password: str, address: str = "203.0.113.7"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def api_log_in(client, username: str, password: str, address: str = "203.0.113.7"):
    return client.post(
        reverse("api-login"),
        {"username": username, "password": password, "name": "laptop"},
        content_type="application/json",
        REMOTE_ADDR=address,
    )


def logged_in_as(client) -> str | None:
    from accounts.models import User

    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


def test_the_directory_password_logs_in_on_the_login_page(client, directory):
    UserFactory(username="ada")
    response = log_in(client, "Ada", ADA_PASSWORD)
    assert response.status_code == 302
    assert logged_in_as(client) == "ada"


def test_the_directory_password_buys_a_token_through_the_api(client, directory):
    UserFactory(username="ada")
    response = api_log_in(client, "ada", ADA_PASSWORD)
    assert response.status_code == 201, response.content
    assert response.json()["token"].startswith("aivc_")


def test_a_wrong_directory_password_is_refused_and_counted(client, directory):
    UserFactory(username="ada")
    response = log_in(client, "ada", "not-adas-password")
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert logged_in_as(client) is None
    assert AccessAttempt.objects.get(username="ada").failures_since_start == 1

    response = api_log_in(client, "ada", "not-adas-password")
    assert response.status_code == 401
    assert AccessAttempt.objects.get(username="ada").failures_since_start == 2


def test_wrong_directory_passwords_pause_logins_like_local_ones(client, directory, settings):
    UserFactory(username="ada")
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        log_in(client, "ada", f"guess-{attempt}")
    response = log_in(client, "ada", ADA_PASSWORD)
    assert response.status_code == 429
    assert logged_in_as(client) is None


def test_an_unknown_account_is_refused(client, directory):
    response = log_in(client, "nobody", "whatever-password")
    assert response.status_code == 200 and logged_in_as(client) is None


def test_a_directory_person_without_a_portal_account_is_refused_by_default(client, directory):
    from accounts.models import User

    response = log_in(client, "grace", PEOPLE_IN_DIRECTORY["grace"][0])
    assert response.status_code == 200 and logged_in_as(client) is None
    assert not User.objects.filter(username="grace").exists()


def test_with_create_users_the_first_login_makes_an_account_on_the_default_profile(
    client, settings, slapd, default_profile
):
    use_directory(settings, slapd.uri, create_users=True)
    response = log_in(client, "grace", PEOPLE_IN_DIRECTORY["grace"][0])
    assert response.status_code == 302
    from accounts.models import User

    grace = User.objects.get(username="grace")
    assert logged_in_as(client) == "grace"
    assert grace.capability_profile is None  # the default profile
    assert grace.forward_port in settings.PORT_RANGE
    assert (grace.email, grace.first_name, grace.last_name) == ("grace@lab.example", "Grace", "Hopper")
    assert not grace.has_usable_password()
    assert not grace.must_change_password


def test_a_local_account_keeps_its_local_password_beside_the_directory(client, directory):
    UserFactory(username="labadmin")  # not in the directory
    log_in(client, "labadmin", LOCAL_PASSWORD)
    assert logged_in_as(client) == "labadmin"


def test_the_first_directory_login_retires_a_one_time_local_password(client, directory):
    ada = UserFactory(username="ada", must_change_password=True)
    log_in(client, "ada", ADA_PASSWORD)
    assert logged_in_as(client) == "ada"
    ada.refresh_from_db()
    assert not ada.must_change_password and not ada.has_usable_password()
    client.logout()
    log_in(client, "ada", LOCAL_PASSWORD)
    assert logged_in_as(client) is None


def test_a_deactivated_account_stays_out_with_the_right_directory_password(client, directory):
    UserFactory(username="ada", is_active=False)
    log_in(client, "ada", ADA_PASSWORD)
    assert logged_in_as(client) is None
    assert api_log_in(client, "ada", ADA_PASSWORD).status_code == 401


def test_the_directory_stopped_says_so_and_local_accounts_still_log_in(client, settings, tmp_path):
    require_ldap_tools()
    server = Slapd(tmp_path).start()
    use_directory(settings, server.uri)
    UserFactory(username="ada")
    UserFactory(username="labadmin")
    log_in(client, "ada", ADA_PASSWORD)
    assert logged_in_as(client) == "ada"
    client.logout()
    server.stop()
    try:
        response = log_in(client, "ada", ADA_PASSWORD)
        assert response.status_code == 200
        assert "directory does not answer" in response.content.decode()
        assert logged_in_as(client) is None

        api = api_log_in(client, "ada", ADA_PASSWORD)
        assert api.status_code == 503
        assert api.json()["code"] == "directory_unavailable"

        log_in(client, "labadmin", LOCAL_PASSWORD)
        assert logged_in_as(client) == "labadmin"
    finally:
        server.stop()


def test_retries_during_an_outage_do_not_pause_a_directory_account_afterwards(client, settings, tmp_path):
    require_ldap_tools()
    server = Slapd(tmp_path).start()
    use_directory(settings, server.uri)
    ada = UserFactory(username="ada")
    ada.set_unusable_password()  # directory-only: no local password to guess
    ada.save()
    server.stop()
    try:
        for _ in range(settings.LOGIN_FAILURE_LIMIT + 2):
            assert log_in(client, "ada", ADA_PASSWORD).status_code == 200
        assert not AccessAttempt.objects.filter(username="ada").exists()
        server.start()  # the directory is back
        log_in(client, "ada", ADA_PASSWORD)
        assert logged_in_as(client) == "ada"
    finally:
        server.stop()


@pytest.mark.parametrize("directory_up", [True, False])
def test_the_bind_password_never_reaches_a_log_or_an_answer(client, settings, slapd, caplog, directory_up):
    wrong_bind = "Bind-Secret-That-Must-Not-Leak-9931"
    uri = slapd.uri if directory_up else "ldap://127.0.0.1:9/"
    use_directory(settings, uri, bind_password=wrong_bind)
    UserFactory(username="ada")
    with caplog.at_level(logging.DEBUG):
        page = log_in(client, "ada", ADA_PASSWORD)
        api = api_log_in(client, "ada", ADA_PASSWORD)
    assert "directory does not answer" in page.content.decode()
    assert api.status_code == 503
    assert caplog.records, "the failure is logged"
    for text in [caplog.text, page.content.decode(), api.content.decode()]:
        assert wrong_bind not in text
