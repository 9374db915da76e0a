import pytest
from django.urls import reverse

from accounts.models import User
from tests.factories import CapabilityProfileFactory, HostFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def maintainer(client):
    user = UserFactory(username="maint", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def test_bulk_creation_page_creates_accounts_and_shows_passwords_once(client, maintainer):
    url = reverse("admin:accounts_user_bulk_create")
    assert client.get(url).status_code == 200
    response = client.post(url, {"usernames": "m1100a01, M1100A02\nm1100a03"})
    assert response.status_code == 200
    created = User.objects.filter(username__startswith="m1100a")
    assert created.count() == 3
    assert all(user.must_change_password for user in created)
    assert len(response.context["created"]) == 3


def test_bulk_creation_page_shows_a_bad_id_next_to_the_field(client, maintainer):
    response = client.post(reverse("admin:accounts_user_bulk_create"), {"usernames": "ok1 bad/id"})
    assert response.status_code == 200
    assert response.context["form"].errors["usernames"]
    assert not User.objects.filter(username="ok1").exists()


def test_the_user_page_shows_effective_limits_per_host(client, maintainer):
    CapabilityProfileFactory(is_default=True, cpus=8, memory_gb=32, gpus=1)
    HostFactory(name="gpu-07", gpus=2)
    student = UserFactory()
    response = client.get(reverse("admin:accounts_user_change", args=[student.pk]))
    assert "gpu-07" in response.content.decode()
    assert "cpus=8 memory=32 GB gpus=1" in response.content.decode()


@pytest.mark.parametrize(
    "name",
    [
        "containers_host",
        "containers_gpu",
        "containers_image",
        "containers_containerevent",
        "containers_spaceaudit",
        "accounts_capabilityprofile",
        "bookings_reservation",
        "bookings_gpuallocation",
        "accounts_user",
    ],
)
def test_every_model_has_an_admin_list(client, maintainer, name):
    assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200


def test_adding_an_account_in_admin_assigns_a_free_port(client, maintainer, settings):
    settings.PORT_RANGE = range(10001, 11000)
    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "M1100B01",
            "usable_password": "true",
            "password1": "q-w-e-r-t-y-1234",
            "password2": "q-w-e-r-t-y-1234",
        },
    )
    assert response.status_code == 302
    user = User.objects.get(username="m1100b01")
    assert maintainer.forward_port is None  # staff: a port only when a booking needs one
    assert user.forward_port == 10001


def test_adding_an_account_when_every_port_is_taken_shows_an_error_not_a_crash(client, maintainer, settings):
    settings.PORT_RANGE = range(10001, 10002)
    UserFactory()  # holds the one port (the maintainer, staff, holds none)
    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "m1100b02",
            "usable_password": "true",
            "password1": "q-w-e-r-t-y-1234",
            "password2": "q-w-e-r-t-y-1234",
        },
    )
    assert response.status_code == 200
    assert "No free forward port" in response.content.decode()
    assert not User.objects.filter(username="m1100b02").exists()


def test_a_forward_port_outside_the_range_is_refused_in_admin(client, maintainer):
    student = UserFactory()
    url = reverse("admin:accounts_user_change", args=[student.pk])
    form = client.get(url).context["adminform"].form
    data = {key: value for key, value in form.initial.items() if value is not None and key != "password"}
    data.update({"forward_port": 80, "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    data.pop("groups", None), data.pop("user_permissions", None), data.pop("last_login", None)
    response = client.post(url, data)
    assert response.status_code == 200
    assert "Choose a port from" in response.content.decode()
