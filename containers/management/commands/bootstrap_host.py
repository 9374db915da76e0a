import importlib
import socket

from django.core.management.base import BaseCommand, CommandError

from containers.bootstrap import detect_machine, host_bootstrap


def probe_gpus() -> tuple[list | None, str]:
    """The GPUs NVML reports, through `containers.gpus.probe()` when that module exists.
    Returns (None, why) when the GPUs cannot be known, so existing GPU rows are kept."""
    try:
        gpus_module = importlib.import_module("containers.gpus")
    except ImportError:
        return None, "no NVML module (containers.gpus) in this portal"
    probe = getattr(gpus_module, "probe", None)
    if probe is None:
        return None, "containers.gpus has no probe()"
    try:
        return list(probe()), ""
    except Exception as error:  # a missing driver raises NVML's own error types
        return None, f"GPU information unavailable ({error.__class__.__name__}: {error})"


class Command(BaseCommand):
    help = (
        "Detects this machine's CPUs, RAM, swap and GPUs and creates or updates its Host and "
        "GPU rows. A machine without GPUs (or without a driver) is fine."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", default=None, help="Host name (default: this machine's host name).")
        parser.add_argument("--address", default=None, help="Host name or IP users ssh to.")

    def handle(self, *args, name: str | None, address: str | None, **options) -> None:
        name = (name or socket.gethostname()).strip()
        if not name or len(name) > 64:
            raise CommandError("Give a host name of 1 to 64 characters with --name.")
        machine = detect_machine()
        if machine.ram_gb == 0:
            self.stdout.write(
                self.style.WARNING("Could not read the RAM from /proc/meminfo; set it in admin.")
            )
        gpus, why = probe_gpus()
        result = host_bootstrap(name=name, machine=machine, gpus=gpus, address=address)
        verb = "Created" if result.created else ("Updated" if result.changed_fields else "Unchanged:")
        self.stdout.write(
            f"{verb} host {result.host.name}: {machine.cpus} CPUs, {machine.ram_gb} GB RAM, "
            f"{machine.swap_gb} GB swap."
        )
        if gpus is None:
            self.stdout.write(self.style.WARNING(f"GPUs left as they were: {why}."))
        else:
            self.stdout.write(f"{len(gpus)} GPU(s) found.")
            for label, indices in (
                ("added", result.gpus_created),
                ("updated", result.gpus_updated),
                ("no longer found, switched off", result.gpus_missing),
            ):
                if indices:
                    self.stdout.write(f"GPU {', '.join(map(str, indices))} {label}.")
