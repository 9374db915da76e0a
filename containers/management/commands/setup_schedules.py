from django.core.management.base import BaseCommand

from containers.schedules import schedules_ensure


class Command(BaseCommand):
    help = (
        "Creates or updates the scheduler's periodic tasks, the central ones and each host's "
        "own (run by its agent); safe to run any number of times."
    )

    def handle(self, *args, **options) -> None:
        for name, created in schedules_ensure():
            self.stdout.write(f"{'Created' if created else 'Updated'} schedule '{name}'.")
