import os

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import CapabilityProfile, User
from accounts.services import user_create
from containers.models import Gpu, Host, Image


class Command(BaseCommand):
    help = (
        "Creates a demo host, default profile, image and admin account when none exist. "
        "Prints the admin's generated password once."
    )

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        if not Host.objects.exists():
            host = Host.objects.create(
                name="demo-gpu-01",
                address="127.0.0.1",
                cpus=32,
                ram_gb=96,
                swap_gb=32,
                work_root=os.environ.get("DEMO_WORK_ROOT", str(settings.BASE_DIR / "var" / "Users")),
                dataset_root=os.environ.get("DEMO_DATASET_ROOT", str(settings.BASE_DIR / "var" / "Dataset")),
                backup_root=os.environ.get("DEMO_BACKUP_ROOT", str(settings.BASE_DIR / "var" / "Backup")),
            )
            Gpu.objects.bulk_create(
                Gpu(host=host, index=index, name="Demo GPU", memory_mb=24576) for index in range(4)
            )
            self.stdout.write(f"Created demo host {host.name} with 4 GPUs.")
        if not CapabilityProfile.objects.filter(is_default=True).exists():
            CapabilityProfile.objects.create(
                name="student",
                is_default=True,
                cpus=8,
                memory_gb=32,
                gpus=1,
                work_space_gb=200,
                backup_space_gb=50,
            )
            self.stdout.write("Created the default capability profile (8 CPUs, 32 GB, 1 GPU).")
        if not Image.objects.exists():
            Image.objects.create(
                reference="rober5566a/aivc-server:latest",
                description="Lab image with SSH, CUDA and Python",
                is_default=True,
            )
            self.stdout.write("Created the default image.")
        if not User.objects.filter(is_superuser=True).exists():
            user, password = user_create(
                username="admin", must_change_password=False, is_staff=True, is_superuser=True
            )
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin account '{user.username}' with password: {password}\n"
                    "It is shown only this once; change it after logging in."
                )
            )
