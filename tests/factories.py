from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import factory

from accounts.models import CapabilityProfile, User
from accounts.services import forward_port_ensure
from bookings.models import GpuAllocation, Reservation
from containers.models import ContainerEvent, Gpu, Host, Image

TAIPEI = ZoneInfo("Asia/Taipei")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=TAIPEI)


class HostFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Host
        django_get_or_create = ("name",)
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"gpu-server-{n:02d}")
    address = factory.LazyAttribute(lambda host: f"{host.name}.lab.example")
    cpus = 16
    ram_gb = 64
    swap_gb = 16

    @factory.post_generation
    def gpus(self, create: bool, extracted: int | None, **kwargs) -> None:
        if create and extracted:
            for index in range(extracted):
                GpuFactory(host=self, index=index)


def host_with_roots(base: Path, **fields) -> Host:
    """A host whose work, backup and dataset roots are folders under `base`, made here."""
    roots = {key: base / key for key in ("work", "backup", "dataset")}
    for path in roots.values():
        path.mkdir(parents=True, exist_ok=True)
    return HostFactory(
        work_root=str(roots["work"]),
        backup_root=str(roots["backup"]),
        dataset_root=str(roots["dataset"]),
        **fields,
    )


class GpuFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Gpu

    host = factory.SubFactory(HostFactory)
    index = factory.Sequence(lambda n: n)
    uuid = factory.Sequence(lambda n: f"GPU-{n:08d}-0000-0000-0000-000000000000")
    name = "NVIDIA GeForce RTX 3090"
    memory_mb = 24576


class ImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Image
        django_get_or_create = ("reference",)

    reference = factory.Sequence(lambda n: f"lab/aivc-server:v{n}")
    is_active = True


class CapabilityProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CapabilityProfile

    name = factory.Sequence(lambda n: f"profile-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"m1100{n:04d}")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def save_password(self, create: bool, extracted, **kwargs) -> None:
        if create:
            self.save()


class ReservationFactory(factory.django.DjangoModelFactory):
    """A reservation written directly, without the booking rules; `gpus` takes the Gpu rows
    to allocate."""

    class Meta:
        model = Reservation
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory)
    host = factory.SubFactory(HostFactory)
    start = factory.LazyFunction(lambda: local(2026, 3, 2, 10))
    end = factory.LazyAttribute(lambda r: r.start + timedelta(hours=1))
    booked_end = factory.LazyAttribute(lambda r: r.end)
    cpus = Decimal("1")
    memory_gb = 1
    gpu_count = 0
    image = factory.SubFactory(ImageFactory)
    # As a booking does: staff get their port when they first book (forward_port_ensure).
    forward_port = factory.LazyAttribute(lambda r: forward_port_ensure(user=r.user).forward_port)

    @factory.post_generation
    def gpus(self, create: bool, extracted: list[Gpu] | None, **kwargs) -> None:
        if create and extracted:
            for gpu in extracted:
                GpuAllocation.objects.create(reservation=self, gpu=gpu, start=self.start, end=self.end)
            self.gpu_count = len(extracted)
            self.save(update_fields=["gpu_count"])


class ContainerEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContainerEvent

    message = "Container started"


class JobFactory(factory.django.DjangoModelFactory):
    """A queued job written directly, without the submit rules."""

    class Meta:
        model = "jobs.Job"

    user = factory.SubFactory(UserFactory)
    image = factory.SubFactory(ImageFactory)
    command = "python train.py"
    cpus = Decimal("1")
    memory_gb = 1
    gpu_count = 0
    time_limit_minutes = 60
    submitted_at = factory.LazyFunction(lambda: local(2026, 3, 2, 10))
