from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from containers.lab_proxy import serve


class Command(BaseCommand):
    help = (
        "Serves JupyterLab at /r/<pk>/lab/ in front of a portal run by `runserver` (make run); "
        "production uses nginx (deploy/nginx.conf, docs/jupyter.md)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--listen", default="", help="HOST:PORT (default 127.0.0.1:LAB_PROXY_PORT)")
        parser.add_argument("--portal", default="http://127.0.0.1:8000", help="The portal's base URL.")
        parser.add_argument(
            "--exit-with-parent", action="store_true", help="Stop when the starting process is gone."
        )

    def handle(self, *args, listen: str, portal: str, exit_with_parent: bool, **options) -> None:
        host, _, port = (listen or f"127.0.0.1:{settings.LAB_PROXY_PORT}").rpartition(":")
        if not port.isdigit() or int(port) == 0:
            raise CommandError("Give --listen HOST:PORT, or set LAB_PROXY_PORT.")
        serve(
            host=host or "127.0.0.1",
            port=int(port),
            portal=portal,
            exit_with_parent=exit_with_parent,
            print_fn=lambda line: self.stdout.write(f"JupyterLab proxy: {line}"),
        )
