from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.models import User
from accounts.selectors import capability_for, first_free_forward_port
from tests.factories import CapabilityProfileFactory, HostFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def big_host():
    return HostFactory(cpus=62, ram_gb=30, swap_gb=10, max_work_space_gb=500, max_backup_space_gb=200, gpus=4)


def test_a_user_without_a_profile_gets_the_default_profile(big_host):
    CapabilityProfileFactory(
        is_default=True, cpus=8, memory_gb=32, gpus=1, work_space_gb=200, backup_space_gb=50
    )
    limits = capability_for(user=UserFactory(), host=big_host)
    assert (limits.cpus, limits.memory_gb, limits.gpus) == (Decimal(8), 32, 1)
    assert (limits.work_space_gb, limits.backup_space_gb) == (200, 50)


def test_a_null_field_on_a_custom_profile_inherits_the_defaults_value(big_host):
    CapabilityProfileFactory(
        is_default=True, cpus=8, memory_gb=32, gpus=1, work_space_gb=200, backup_space_gb=50
    )
    user = UserFactory(capability_profile=CapabilityProfileFactory(gpus=4, cpus=None))
    limits = capability_for(user=user, host=big_host)
    assert (limits.cpus, limits.memory_gb, limits.gpus) == (Decimal(8), 32, 4)


def test_a_null_field_on_the_default_profile_means_the_host_maximum(big_host):
    CapabilityProfileFactory(is_default=True, cpus=None, memory_gb=None, gpus=None, work_space_gb=None)
    user = UserFactory(capability_profile=CapabilityProfileFactory(backup_space_gb=10))
    limits = capability_for(user=user, host=big_host)
    assert (limits.cpus, limits.memory_gb, limits.gpus) == (Decimal(62), 40, 4)
    assert (limits.work_space_gb, limits.backup_space_gb) == (500, 10)


def test_with_no_profile_at_all_everything_is_the_host_maximum(big_host):
    limits = capability_for(user=UserFactory(), host=big_host)
    assert (limits.cpus, limits.memory_gb, limits.gpus, limits.backup_space_gb) == (Decimal(62), 40, 4, 200)


def test_the_host_maximum_counts_only_gpus_in_service(big_host):
    big_host.gpus.filter(index=3).update(is_active=False)
    assert capability_for(user=UserFactory(), host=big_host).gpus == 3


def test_new_accounts_get_the_lowest_free_port_in_range(settings):
    settings.PORT_RANGE = range(10001, 10004)
    first, second = UserFactory(), UserFactory()
    assert (first.forward_port, second.forward_port) == (10001, 10002)
    first.delete()
    assert UserFactory().forward_port == 10001


def test_a_full_port_range_is_a_clear_error_not_an_endless_loop(settings):
    settings.PORT_RANGE = range(10001, 10003)
    UserFactory()
    UserFactory()
    with pytest.raises(ValidationError, match="No free forward port left in 10001-10002"):
        first_free_forward_port()
    with pytest.raises(ValidationError, match="No free forward port"):
        UserFactory()


@pytest.mark.django_db(transaction=True)
def test_accounts_created_at_the_same_time_get_different_ports():
    import threading

    from django.db import connection

    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def create(number: int) -> None:
        barrier.wait()
        try:
            UserFactory(username=f"racer{number}")
        except BaseException as error:  # recorded so the test shows the cause
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    ports = [user.forward_port for user in User.objects.filter(username__startswith="racer")]
    assert len(ports) == 6 and len(set(ports)) == 6


def test_staff_and_superusers_get_no_forward_port_so_a_full_range_never_blocks_creating_them(settings):
    settings.PORT_RANGE = range(10001, 10002)
    student = UserFactory()
    assert student.forward_port == 10001
    with pytest.raises(ValidationError, match="No free forward port"):
        UserFactory()
    staff = UserFactory(is_staff=True)
    root = User.objects.create_superuser("root2", "root2@lab.example", "a long passphrase 42")
    assert (staff.forward_port, root.forward_port) == (None, None)
    staff.save()
    assert User.objects.get(pk=staff.pk).forward_port is None


def test_the_allocator_skips_a_port_something_already_listens_on_here(settings, listening_ports_here):
    import socket

    # A service of the lab's one server (a database, a notebook) listening in the range:
    # a container given that port would fail at every launch.
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))  # noqa: S104 - as a service on the host would
        listener.listen()
        port = listener.getsockname()[1]
        settings.PORT_RANGE = range(port, port + 50)
        assert first_free_forward_port() != port
        assert UserFactory().forward_port != port
        settings.PORT_RANGE = range(port, port + 1)
        with pytest.raises(ValidationError, match="No free forward port"):
            first_free_forward_port()
