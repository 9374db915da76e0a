import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from accounts.services import FORWARD_PORT_DUPLICATED, user_change_forward_port, user_update_profile
from accounts.sshkeys import clean_ssh_public_keys
from tests.factories import ImageFactory, UserFactory

pytestmark = pytest.mark.django_db

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
RSA_BODY_SAYS_ED25519 = "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_it_keeps_valid_keys_one_per_line():
    assert clean_ssh_public_keys(f"\n  {ED25519}  \r\n\n") == ED25519


@pytest.mark.parametrize(
    "line",
    [
        "not a key",
        'command="rm -rf /" ' + ED25519,
        "ssh-ed25519 not-base64!!",
        RSA_BODY_SAYS_ED25519,
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_it_rejects_lines_that_are_not_plain_openssh_public_keys(line):
    with pytest.raises(ValidationError):
        clean_ssh_public_keys(f"{ED25519}\n{line}")


def test_it_saves_keys_default_image_and_command(student):
    image = ImageFactory(reference="lab/torch:2")
    user_update_profile(
        user=student, ssh_public_keys=ED25519, default_image=image, default_extra_command=" jupyter lab "
    )
    student.refresh_from_db()
    assert (student.ssh_public_keys, student.default_image, student.default_extra_command) == (
        ED25519,
        image,
        "jupyter lab",
    )


def test_it_refuses_an_inactive_default_image(student):
    inactive = ImageFactory(reference="lab/old:1", is_active=False)
    with pytest.raises(ValidationError) as error:
        user_update_profile(
            user=student, ssh_public_keys="", default_image=inactive, default_extra_command=""
        )
    assert error.value.message_dict["default_image"] == ["Not the available image!"]


@override_settings(PORT_RANGE=range(10001, 10011))
def test_it_moves_the_forward_port_to_a_free_port_in_range(student):
    user_change_forward_port(user=student, port=10009)
    student.refresh_from_db()
    assert student.forward_port == 10009


@override_settings(PORT_RANGE=range(10001, 10011))
@pytest.mark.parametrize("port", [10000, 10011, 22])
def test_it_refuses_a_port_outside_the_range(student, port):
    with pytest.raises(ValidationError) as error:
        user_change_forward_port(user=student, port=port)
    assert "10001-10010" in error.value.message_dict["forward_port"][0]


def test_it_refuses_a_port_another_account_holds(student):
    other = UserFactory(username="other")
    with pytest.raises(ValidationError) as error:
        user_change_forward_port(user=student, port=other.forward_port)
    assert error.value.message_dict["forward_port"] == [FORWARD_PORT_DUPLICATED]


def test_it_refuses_a_port_a_live_reservation_still_uses(student):
    port = student.forward_port + 50
    with pytest.raises(ValidationError):
        user_change_forward_port(user=student, port=port, ports_held={port})
