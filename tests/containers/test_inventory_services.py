from functools import partial

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from containers.inventory_services import (
    host_create_or_update,
    host_gpus_ensure,
    image_create_or_update,
    image_set_default,
)
from containers.models import Gpu, Host, Image
from tests.admin_helpers import message_texts, post_action
from tests.factories import GpuFactory, HostFactory, ImageFactory

ROOTS = {"work_root": "/mnt/Users", "dataset_root": "/mnt/Dataset", "backup_root": "/mnt/Backup"}


@pytest.mark.django_db
def test_a_host_is_created_then_only_its_changed_fields_are_written():
    saved = host_create_or_update(name="gpu-old", cpus=62, ram_gb=30, swap_gb=10, **ROOTS)
    assert saved.created and saved.action == "created"
    assert (saved.instance.cpus, saved.instance.memory_gb) == (62, 40)
    again = host_create_or_update(name="gpu-old", cpus=62, ram_gb=30, swap_gb=10, **ROOTS)
    assert (again.action, again.changed, again.instance.pk) == ("unchanged", [], saved.instance.pk)
    grown = host_create_or_update(name="gpu-old", cpus=64, ram_gb=30, swap_gb=10)
    assert grown.changed == ["cpus"]
    assert Host.objects.get().cpus == 64


@pytest.mark.django_db
def test_a_host_value_the_admin_form_would_refuse_is_a_validation_error():
    with pytest.raises(ValidationError) as caught:
        host_create_or_update(name="gpu-old", cpus=-1, ram_gb=30)
    assert "cpus" in caught.value.message_dict
    with pytest.raises(ValidationError):
        host_create_or_update(name="x" * 65, cpus=1, ram_gb=1)
    assert not Host.objects.exists()


@pytest.mark.django_db
def test_gpus_are_added_up_to_the_count_and_never_removed():
    host = HostFactory(gpus=0)
    GpuFactory(host=host, index=5)
    gpus, created = host_gpus_ensure(host=host, count=2)
    assert created == [0, 1]
    assert sorted(gpus) == [0, 1, 5]
    assert host_gpus_ensure(host=host, count=2)[1] == []
    assert Gpu.objects.filter(host=host).count() == 3


@pytest.mark.django_db
def test_a_new_default_image_steps_the_old_one_down():
    old = ImageFactory(reference="lab/old:1", is_default=True)
    saved = image_create_or_update(reference="lab/new:1", is_default=True, is_active=True)
    old.refresh_from_db()
    assert saved.created and saved.instance.is_default
    assert not old.is_default
    assert (
        image_create_or_update(reference="lab/new:1", is_default=True, is_active=True).action == "unchanged"
    )


@pytest.mark.django_db
def test_only_an_active_image_can_be_the_default():
    retired = ImageFactory(is_active=False)
    with pytest.raises(ValidationError, match="Only an active image"):
        image_set_default(image=retired)


run_image_action = partial(post_action, changelist=reverse("admin:containers_image_changelist"))


@pytest.mark.django_db
def test_the_admin_makes_an_image_the_default_through_the_same_service(admin_client):
    old = ImageFactory(reference="lab/old:1", is_default=True)
    new = ImageFactory(reference="lab/new:1")
    response = run_image_action(admin_client, "make_default", new)
    assert "lab/new:1 is now the default image instead of lab/old:1." in message_texts(response)
    assert list(Image.objects.filter(is_default=True)) == [new]
    old.refresh_from_db()
    assert not old.is_default
    response = run_image_action(admin_client, "make_default", old, new)
    assert "Choose exactly one image to be the default." in message_texts(response)
