"""Account and profile writes a maintainer makes (the admin, the legacy importer)."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.models import CapabilityProfile
from accounts.services import (
    default_profile_update,
    profile_create_or_update,
    user_create,
    user_update_lab_settings,
)
from tests.factories import CapabilityProfileFactory, ImageFactory, UserFactory


@pytest.mark.django_db
def test_the_default_profile_is_created_once_then_updated():
    saved = default_profile_update(cpus=Decimal(8), memory_gb=32, gpus=None)
    assert saved.created and saved.instance.is_default and saved.instance.name == "default"
    again = default_profile_update(cpus=Decimal(8), memory_gb=64, gpus=None)
    assert (again.instance.pk, again.changed) == (saved.instance.pk, ["memory_gb"])
    assert CapabilityProfile.objects.get(is_default=True).memory_gb == 64


@pytest.mark.django_db
def test_the_default_profile_keeps_its_name_whatever_it_is_called():
    lab = CapabilityProfileFactory(name="student", is_default=True, gpus=1)
    assert default_profile_update(gpus=2).instance == lab
    assert CapabilityProfile.objects.count() == 1


@pytest.mark.django_db
def test_a_custom_profile_is_matched_by_name_and_never_becomes_the_default():
    saved = profile_create_or_update(name="legacy-m11107s01", memory_gb=36)
    assert saved.created and not saved.instance.is_default
    assert profile_create_or_update(name="legacy-m11107s01", memory_gb=36).action == "unchanged"
    CapabilityProfileFactory(name="default", is_default=True)
    with pytest.raises(ValidationError, match="is the default profile"):
        profile_create_or_update(name="default", memory_gb=1)


@pytest.mark.django_db
def test_a_limit_the_model_refuses_is_a_validation_error():
    with pytest.raises(ValidationError):
        profile_create_or_update(name="broken", memory_gb=-1)


@pytest.mark.django_db
def test_lab_settings_take_an_inactive_image_but_not_an_unsplittable_command():
    user = UserFactory()
    retired = ImageFactory(is_active=False)
    assert user_update_lab_settings(user=user, default_image=retired, is_active=True) == ["default_image"]
    with pytest.raises(ValidationError) as caught:
        user_update_lab_settings(user=user, default_extra_command="python 'x")
    assert "default_extra_command" in caught.value.message_dict
    with pytest.raises(TypeError):
        user_update_lab_settings(user=user, forward_port=10001)


@pytest.mark.django_db
def test_an_account_without_a_usable_password_cannot_log_in():
    user, password = user_create(username="m10907s44", usable_password=False, is_active=False)
    assert password == ""
    assert not user.has_usable_password()
    assert user.forward_port is not None
