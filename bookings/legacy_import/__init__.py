"""Moves the old AIVC-Server-Booking files (cfg/*.yaml, jobs/*.csv) into the portal, in two
steps: pure parsing into plain records with every problem collected (`parsing.py`,
`schedules.py`, `reading.py`, `records.py`), then one transaction that writes the records
through the portal's services (`writing.py`).

All or nothing: any problem in the files, or any record a service refuses, raises
`LegacyImportError` listing every problem (file, line, what is wrong) and nothing is saved.
Rows are matched on natural keys (host name, image reference, profile name, account id,
reservation user + host + start), so a second run over the same files changes nothing.
Plain passwords from users_config.yaml are hashed by the accounts service (`user_create`)
and never appear in a message, a report, a record's repr or a log. Past reservations are
written by `reservation_import`, which skips the rules for new bookings (a start in the
future, the profile's maxima) and keeps the ones for consistency (no overlapping own
bookings, no GPU held twice by live reservations); ended rows keep their GPUs as inactive
allocations, so history the old checker double-booked still imports."""

from collections.abc import Sequence
from pathlib import Path

from django.db import transaction

from bookings.legacy_import.parsing import parse_legacy
from bookings.legacy_import.reading import evaluate_expression
from bookings.legacy_import.records import LegacyData, ParseResult, Problem
from bookings.legacy_import.writing import ImportReport, write_legacy

__all__ = [
    "ImportReport",
    "LegacyData",
    "LegacyImportError",
    "ParseResult",
    "Problem",
    "evaluate_expression",
    "import_legacy",
    "parse_legacy",
]


class LegacyImportError(Exception):
    """Nothing was imported. `problems`: every error, in file order; `file`, `line` and
    `reason` are the first one's."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problem for problem in problems if problem.is_error)
        first = self.problems[0]
        self.file, self.line, self.reason = first.file, first.line, first.message
        more = len(self.problems) - 1
        super().__init__(f"{first}" + (f" (and {more} more problem(s))" if more else ""))


class _DryRunRollback(Exception):
    pass


def import_legacy(*, cfg_dir: Path, jobs_dir: Path, host_name: str, dry_run: bool = False) -> ImportReport:
    """Imports everything or nothing. In a dry run the work is done and rolled back, so the
    report says exactly what a real run would change."""
    parsed = parse_legacy(cfg_dir=Path(cfg_dir), jobs_dir=Path(jobs_dir))
    if parsed.errors:
        raise LegacyImportError(parsed.problems)
    report = ImportReport(dry_run=dry_run, notes=[str(problem) for problem in parsed.warnings])
    try:
        with transaction.atomic():
            problems = write_legacy(data=parsed.data, host_name=host_name, report=report)
            if problems:
                raise LegacyImportError(problems)
            if dry_run:
                raise _DryRunRollback
    except _DryRunRollback:
        report.one_time_passwords.clear()
    return report
