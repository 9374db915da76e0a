from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.models import Schedule

SCHEDULES = [
    {
        "name": "reconcile containers",
        "func": "containers.tasks.reconcile",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
    },
    {
        "name": "sample GPUs",
        "func": "containers.tasks.sample_gpus",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
    },
    {
        "name": "sync GPU inventory",
        "func": "containers.tasks.sync_gpu_inventory",
        "schedule_type": Schedule.HOURLY,
    },
    {
        "name": "prune GPU samples",
        "func": "containers.tasks.prune_gpu_samples",
        "schedule_type": Schedule.DAILY,
    },
    {
        # Its own task, so a slow mail server never delays a reconcile tick.
        "name": "notify users",
        "func": "accounts.tasks.send_notifications",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
    },
    {
        "name": "audit space",
        "func": "containers.tasks.space_audit",
        "schedule_type": Schedule.MINUTES,
        "minutes": settings.SPACE_AUDIT_MINUTES,
    },
]


class Command(BaseCommand):
    help = "Creates or updates the scheduler's periodic tasks; safe to run any number of times."

    def handle(self, *args, **options) -> None:
        for spec in SCHEDULES:
            fields = {key: value for key, value in spec.items() if key != "name"}
            _, created = Schedule.objects.update_or_create(
                name=spec["name"], defaults={**fields, "repeats": -1}
            )
            self.stdout.write(f"{'Created' if created else 'Updated'} schedule '{spec['name']}'.")
