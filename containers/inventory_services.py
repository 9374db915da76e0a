"""Writes of the inventory (hosts, their GPUs, images) that more than one caller makes:
the admin, `bootstrap_host` and the legacy importer. Natural keys: a host by name, a GPU
by (host, index), an image by reference. Imports only the inventory models."""

from django.core.exceptions import ValidationError
from django.db import transaction

from aivc_portal.model_updates import Saved, model_create, model_update
from containers.models import Gpu, Host, Image

HOST_FIELDS = frozenset(
    {
        "address",
        "cpus",
        "ram_gb",
        "swap_gb",
        "max_work_space_gb",
        "max_backup_space_gb",
        "max_home_space_gb",
        "work_root",
        "dataset_root",
        "backup_root",
    }
)
IMAGE_FIELDS = frozenset({"description", "cuda_version", "is_default", "is_active", "start_command", "login"})


def _only(values: dict, allowed: frozenset[str], *, what: str) -> dict:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise TypeError(f"{what} does not take {', '.join(unknown)}")
    return values


@transaction.atomic
def host_create_or_update(*, name: str, **values) -> Saved:
    """The Host called `name` with these totals and folders: created, or only the fields
    that differ written. The row is locked, so two writers (an agent's bootstrap, an
    import) never interleave."""
    values = _only(values, HOST_FIELDS, what="host_create_or_update")
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "A host needs a name."})
    host = Host.objects.select_for_update().filter(name=name).first()
    if host is None:
        return Saved(
            model_create(model=Host, values={"name": name, **values}), created=True, changed=list(values)
        )
    return Saved(host, changed=model_update(instance=host, values=values))


def host_gpus_ensure(*, host: Host, count: int) -> tuple[dict[int, Gpu], list[int]]:
    """GPU rows 0..count-1 exist on the host; GPUs beyond `count` are kept (allocations
    refer to them; telemetry takes a vanished GPU out of service). Returns every GPU of
    the host by index, and the indices created now."""
    gpus = {gpu.index: gpu for gpu in Gpu.objects.filter(host=host)}
    created = [index for index in range(count) if index not in gpus]
    for index in created:
        gpus[index] = Gpu.objects.create(host=host, index=index)
    return gpus, created


def _step_down_default_image(*, keep: Image | None) -> Image | None:
    """Exactly one image is the default: the current one steps down before another takes
    its place. Returns the image that stepped down."""
    current = Image.objects.select_for_update().filter(is_default=True)
    if keep is not None and keep.pk is not None:
        current = current.exclude(pk=keep.pk)
    previous = current.first()
    if previous is not None:
        model_update(instance=previous, values={"is_default": False})
    return previous


@transaction.atomic
def image_create_or_update(*, reference: str, **values) -> Saved:
    """The image `reference` with these settings. Making it the default steps the previous
    default down (one rule, shared with the admin's "make default" action)."""
    values = _only(values, IMAGE_FIELDS, what="image_create_or_update")
    reference = (reference or "").strip()
    image = Image.objects.filter(reference=reference).first()
    if values.get("is_default"):
        _step_down_default_image(keep=image)
    if image is None:
        return Saved(model_create(model=Image, values={"reference": reference, **values}), created=True)
    return Saved(image, changed=model_update(instance=image, values=values))


@transaction.atomic
def image_set_default(*, image: Image) -> Image | None:
    """Makes `image` the lab's default (for users without one of their own); it must be
    active. Returns the image that was the default before, if another."""
    if not image.is_active:
        raise ValidationError("Only an active image can be the default.", code="image_inactive")
    previous = _step_down_default_image(keep=image)
    model_update(instance=image, values={"is_default": True})
    return previous
