import socket

from django.core.management.base import BaseCommand, CommandError

from containers import gpus
from containers.bootstrap import detect_machine, host_bootstrap
from containers.telemetry.services import gpu_inventory_sync


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
        result = host_bootstrap(name=name, machine=machine, address=address)
        verb = "Created" if result.created else ("Updated" if result.changed_fields else "Unchanged:")
        self.stdout.write(
            f"{verb} host {result.host.name}: {machine.cpus} CPUs, {machine.ram_gb} GB RAM, "
            f"{machine.swap_gb} GB swap."
        )
        reading = gpus.probe()
        if not reading.available:
            self.stdout.write(self.style.WARNING(f"GPUs left as they were: {reading.unavailable_reason}."))
            return
        events = gpu_inventory_sync(host=result.host, result=reading)
        self.stdout.write(f"{len(reading.gpus)} GPU(s) found.")
        for event in events:
            self.stdout.write(event.as_log_line())
