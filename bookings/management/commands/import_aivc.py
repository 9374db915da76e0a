import socket
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bookings.legacy_import import ImportReport, LegacyImportError, import_legacy


class Command(BaseCommand):
    help = (
        "Imports the old AIVC-Server-Booking files: host_deploy.yaml, capability_config.yaml and "
        "users_config.yaml from --cfg, booking.csv, using.csv and used.csv from --jobs. All or "
        "nothing: every problem is listed with its file and line, and nothing is saved; running "
        "it again over the same files changes nothing. Run it before the portal's scheduler "
        "takes over: the files' statuses overwrite the portal's."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--cfg", required=True, type=Path, help="Folder with the old *.yaml files.")
        parser.add_argument("--jobs", required=True, type=Path, help="Folder with the old *.csv files.")
        parser.add_argument(
            "--host", default=None, help="Host name to import into (default: this machine's)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Print what would change; save nothing.")

    def handle(self, *args, cfg: Path, jobs: Path, host: str | None, dry_run: bool, **options) -> None:
        host_name = (host or socket.gethostname()).strip()
        if not host_name:
            raise CommandError("Give the host's name with --host.")
        try:
            report = import_legacy(cfg_dir=cfg, jobs_dir=jobs, host_name=host_name, dry_run=dry_run)
        except LegacyImportError as error:
            raise CommandError(_failure(error)) from None
        if dry_run or options["verbosity"] >= 2:
            for change in report.changes:
                self.stdout.write(f"  {change}")
        for note in report.notes:
            self.stdout.write(self.style.WARNING(f"Note: {note}"))
        for kind, counts in report.counts.items():
            self.stdout.write(
                f"{kind}: {counts['created']} created, {counts['updated']} updated, "
                f"{counts['unchanged']} unchanged"
            )
        self._hand_over_passwords(report)
        self._conclude(report, host_name=host_name)

    def _hand_over_passwords(self, report: ImportReport) -> None:
        """Shown once to the maintainer on the terminal; never logged, never saved."""
        if not report.one_time_passwords:
            return
        self.stdout.write(
            "New accounts without a users_config entry; hand each its one-time password "
            "(it must be changed at first login; it is shown only now):"
        )
        for username, password in report.one_time_passwords:
            self.stdout.write(f"  {username}  {password}")

    def _conclude(self, report: ImportReport, *, host_name: str) -> None:
        if report.dry_run:
            self.stdout.write(self.style.WARNING("Dry run: nothing was saved."))
        elif not report.changed:
            self.stdout.write(self.style.SUCCESS("Nothing to change: the portal already holds these files."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Imported into host {host_name}."))


def _failure(error: LegacyImportError) -> str:
    """Every problem, the first on the first line (file, line: what is wrong)."""
    first, *others = error.problems
    message = f"Nothing was imported. {first}"
    if others:
        listed = "\n".join(f"  {problem}" for problem in others)
        message += f"\n{len(others)} more problem(s):\n{listed}"
    return message
