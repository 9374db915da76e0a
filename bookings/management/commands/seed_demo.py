import os
import socket

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import CapabilityProfile, User
from accounts.services import user_create
from containers import gpus
from containers.bootstrap import detect_machine, host_bootstrap
from containers.models import Host, Image
from containers.runtime import RuntimeProblem, get_runtime
from containers.telemetry.services import gpu_inventory_sync

# What deploy/images/Dockerfile is built as in docs/images.md; registered when the engine
# holds no lab image yet, so the demo says which image to build.
DEMO_IMAGE = "aivc/lab:cuda12.4"
BUILD_HINT = (
    "Build one with `docker build -t aivc/lab:cuda12.4 deploy/images` (needs a registry for the "
    "CUDA base) or offline with `sudo deploy/test-engine/setup.sh` (aivc-test/sshd:latest), "
    "then run `make demo` again."
)


class Command(BaseCommand):
    help = (
        "Makes this machine the demo host (its real CPUs, RAM and GPUs; none is fine), a default "
        "profile within it, a lab image the local engine holds, and an admin account, where none "
        "exist. Prints the admin's generated password once."
    )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            host = Host.objects.first() or self._create_host()
            self._ensure_profile(host)
            self._ensure_admin()
        self._ensure_image(host)

    def _create_host(self) -> Host:
        machine = detect_machine()
        host = host_bootstrap(
            name=socket.gethostname()[:64] or "demo", machine=machine, address="127.0.0.1"
        ).host
        var = settings.BASE_DIR / "var"
        host.work_root = os.environ.get("DEMO_WORK_ROOT", str(var / "Users"))
        host.dataset_root = os.environ.get("DEMO_DATASET_ROOT", str(var / "Dataset"))
        host.backup_root = os.environ.get("DEMO_BACKUP_ROOT", str(var / "Backup"))
        host.save(update_fields=["work_root", "dataset_root", "backup_root"])
        reading = gpus.probe()
        found = 0
        if reading.available:
            gpu_inventory_sync(host=host, result=reading)
            found = len(reading.gpus)
        self.stdout.write(
            f"Created demo host {host.name} (this machine): {host.cpus} CPUs, {host.ram_gb} GiB RAM, "
            f"{host.swap_gb} GiB swap, {found} GPU(s)."
        )
        return host

    def _ensure_profile(self, host: Host) -> None:
        if CapabilityProfile.objects.filter(is_default=True).exists():
            return
        gpu_count = host.gpus.filter(is_active=True).count()
        profile = CapabilityProfile.objects.create(
            name="student",
            is_default=True,
            cpus=min(8, host.cpus),
            memory_gb=min(32, host.memory_gb),
            gpus=min(1, gpu_count),
            work_space_gb=200,
            backup_space_gb=50,
        )
        self.stdout.write(
            f"Created the default capability profile ({profile.cpus} CPUs, {profile.memory_gb} GiB, "
            f"{profile.gpus} GPU)."
        )

    def _ensure_admin(self) -> None:
        if User.objects.filter(is_superuser=True).exists():
            return
        user, password = user_create(username="admin", is_staff=True, is_superuser=True)
        self.stdout.write(
            self.style.WARNING(
                f"Created admin account '{user.username}' with password: {password}\n"
                "It is shown only this once; you choose your own at the first login."
            )
        )

    def _ensure_image(self, host: Host) -> None:
        """The default image: one the local engine holds that starts the lab entrypoint."""
        usable = Image.objects.filter(is_active=True, login=Image.Login.KEYS)
        try:
            local = get_runtime(host).lab_images()
        except RuntimeProblem as error:
            local = None
            self.stdout.write(
                self.style.WARNING(
                    f"No Docker engine answers ({error}): booking works, containers do not start."
                )
            )
        default = usable.filter(is_default=True).first()
        if default is not None and (local is None or default.reference in local):
            return
        if local:
            reference = local[0]
            description = "Lab image found on this machine's engine (key-only sshd)"
        else:
            reference, description = DEMO_IMAGE, "Lab image built from deploy/images"
            if local is not None:
                self.stdout.write(self.style.WARNING(f"The engine holds no lab image. {BUILD_HINT}"))
        with transaction.atomic():
            Image.objects.filter(is_default=True).update(is_default=False)
            image, _ = Image.objects.update_or_create(
                reference=reference,
                defaults={"description": description, "is_default": True, "is_active": True},
            )
        self.stdout.write(f"The default image is {image.reference}.")
