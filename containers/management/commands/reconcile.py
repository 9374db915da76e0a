from django.core.management.base import BaseCommand

from containers.tasks import reconcile


class Command(BaseCommand):
    help = "Runs one reconcile tick now: starts due containers, removes ended ones."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", type=int, default=None, help="Only this host id.")

    def handle(self, *args, host: int | None = None, **options) -> None:
        self.stdout.write(reconcile(host_id=host, wake=False))
