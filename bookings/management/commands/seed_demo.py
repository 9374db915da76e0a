import os
import socket
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.models import CapabilityProfile, User
from accounts.services import user_create
from containers import gpus
from containers.bootstrap import detect_machine, host_bootstrap
from containers.image_services import image_presence_record
from containers.models import Host, Image, ImagePresence
from containers.runtime import RuntimeProblem, get_runtime
from containers.telemetry.services import gpu_inventory_sync

BUILD_SCRIPT = "deploy/images/build-lab-image.sh"
BUILD_HINT = "`sudo make lab-image` builds it offline (Debian packages and JupyterLab, no registry)"


class Command(BaseCommand):
    help = (
        "Makes this machine the demo host (its real CPUs, RAM and GPUs; none is fine), a default "
        "profile within it, a lab image the local engine holds, and an admin account, where none "
        "exist. Prints the admin's generated password once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--build-lab-image",
            action="store_true",
            help=f"When the engine holds no lab image, build one with {BUILD_SCRIPT} (make run does).",
        )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            host = Host.objects.first() or self._create_host()
            self._ensure_profile(host)
            self._ensure_admin()
        self._ensure_image(host, build=options["build_lab_image"])

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

    def _ensure_image(self, host: Host, *, build: bool) -> None:
        """The default image: a lab image the local engine holds (the one `make lab-image`
        builds first), built once here when asked and there is none. What the engine was
        found to hold is recorded as the image's presence on the host, so the booking form
        never offers an image the engine lacks."""
        try:
            local = get_runtime(host).lab_images()
        except RuntimeProblem as error:
            local = None
            self.stdout.write(
                self.style.WARNING(
                    f"No Docker engine answers ({error}): the portal runs and takes bookings, but "
                    f"no container starts until an engine answers and holds a lab image ({BUILD_HINT})."
                )
            )
        if local == [] and build:
            local = self._build_lab_image(host)
        usable = Image.objects.filter(is_active=True, login=Image.Login.KEYS)
        image = usable.filter(is_default=True).first()
        if image is None or (local is not None and image.reference not in local):
            reference = settings.LAB_IMAGE
            if local and reference not in local:
                reference = local[0]
            image = self._make_default(reference)
        if local is not None:
            self._record_presence(host=host, image=image, present=image.reference in local)
        self.stdout.write(f"The default image is {image.reference}.")

    def _build_lab_image(self, host: Host) -> list[str] | None:
        """Runs the build script with its progress shown; the engine's lab images after it."""
        self.stdout.write(f"The engine holds no lab image: building {settings.LAB_IMAGE} once (minutes).")
        self.stdout.flush()
        environment = {**os.environ, "PYTHON": sys.executable, "AIVC_LAB_IMAGE": settings.LAB_IMAGE}
        if host.docker_url:
            environment["DOCKER_HOST"] = host.docker_url
        script = settings.BASE_DIR / BUILD_SCRIPT
        try:
            built = subprocess.run([str(script)], env=environment, stdout=subprocess.DEVNULL, check=False)
        except OSError as error:
            self.stdout.write(self.style.WARNING(f"Could not run {BUILD_SCRIPT} ({error})."))
            return []
        if built.returncode != 0:
            self.stdout.write(
                self.style.WARNING(f"The lab image was not built (exit {built.returncode}); {BUILD_HINT}.")
            )
        try:
            return get_runtime(host).lab_images()
        except RuntimeProblem:
            return None

    def _make_default(self, reference: str) -> Image:
        """Registers `reference` as the default image; the lab image takes the portal's modes."""
        with transaction.atomic():
            Image.objects.filter(is_default=True).update(is_default=False)
            image, _ = Image.objects.update_or_create(
                reference=reference,
                defaults={
                    "description": "Lab image built from deploy/images",
                    "is_default": True,
                    "is_active": True,
                    "lab_modes": reference == settings.LAB_IMAGE,
                },
            )
        return image

    def _record_presence(self, *, host: Host, image: Image, present: bool) -> None:
        now = timezone.now()
        if present:
            image_presence_record(host=host, image=image, state=ImagePresence.State.PRESENT, now=now)
            return
        message = f"{image.reference} is not on this machine's engine; {BUILD_HINT}"
        state = ImagePresence.State.FAILED
        image_presence_record(host=host, image=image, state=state, now=now, message=message)
        warning = f"The engine holds no lab image, so none can be booked: {BUILD_HINT}, then `make run`."
        self.stdout.write(self.style.WARNING(warning))
