"""Pure parsing of the old schedules (jobs/used.csv, using.csv or use.csv, booking.csv)
into reservation records, every problem collected with its file, line and column."""

from dataclasses import dataclass
from pathlib import Path

from bookings.legacy_import.reading import (
    Problems,
    account_id,
    cpus_number,
    gpu_list,
    is_null,
    moment,
    read_csv_rows,
    whole_number,
)
from bookings.legacy_import.records import ENDED, RUNNING, SCHEDULED, ReservationRecord
from containers.commands import command_problem

# Old file names -> the status their rows get. The CLI's docs call the running file both
# `using.csv` and `use.csv`; the first one found is read.
SCHEDULE_FILES = (
    (("used.csv",), ENDED),
    (("using.csv", "use.csv"), RUNNING),
    (("booking.csv",), SCHEDULED),
)
CSV_COLUMNS = ("start", "end", "user_id", "cpus", "memory", "gpus", "forward_port", "image", "extra_command")
MAX_EXTRA_COMMAND = 1000
MAX_REFERENCE = 255


@dataclass
class _File:
    """One schedule file while it is read."""

    name: str
    status: str
    gpus: int | None
    default_image: str | None
    problems: Problems

    def error(self, line: int, message: str, column: str = "") -> None:
        self.problems.error(self.name, line, message, field=column)

    def check(self, line: int, column: str, convert, *args, **kwargs):
        return self.problems.check(self.name, line, convert, *args, field=column, **kwargs)


def parse_schedules(
    jobs_dir: Path, problems: Problems, *, gpus: int | None, default_image: str | None
) -> list[ReservationRecord]:
    """Every row of the three files. `gpus` is max.gpus (None when unreadable: indices are
    not checked); a row's null image is `default_image`. A row written twice (same user
    and start, in any file) is an error."""
    rows: list[ReservationRecord] = []
    seen: dict[tuple, str] = {}
    for names, status in SCHEDULE_FILES:
        path = next((jobs_dir / name for name in names if (jobs_dir / name).is_file()), None)
        if path is None:
            problems.warning(" / ".join(names), None, f"not found in {jobs_dir}, skipped.")
            continue
        file = _File(path.name, status, gpus, default_image, problems)
        for row in _read_file(path, file):
            key = (row.username, row.start)
            if key in seen:
                file.error(row.line, f"the same reservation as {seen[key]}")
                continue
            seen[key] = row.where
            rows.append(row)
    return rows


def _read_file(path: Path, file: _File):
    lines = read_csv_rows(path, file.problems)
    _, header = next(lines, (0, None))
    if header is None:
        return
    header = [column.strip() for column in header]
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        file.error(1, f"missing column(s): {', '.join(missing)}")
        return
    positions = {column: header.index(column) for column in CSV_COLUMNS}
    for line, cells in lines:
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            file.error(line, f"expected {len(header)} cells, found {len(cells)}")
            continue
        row = _row({column: cells[position].strip() for column, position in positions.items()}, file, line)
        if row is not None:
            yield row


def _row(cells: dict[str, str], file: _File, line: int) -> ReservationRecord | None:
    """One row, or None when any of its cells is wrong (each wrong cell is recorded)."""
    values = {
        "start": file.check(line, "start", moment, cells["start"], what="start"),
        "end": file.check(line, "end", moment, cells["end"], what="end"),
        "username": file.check(line, "user_id", account_id, cells["user_id"]),
        "cpus": file.check(line, "cpus", cpus_number, cells["cpus"]),
        "memory_gb": file.check(line, "memory", whole_number, cells["memory"], what="memory", minimum=1),
        "gpu_indices": file.check(line, "gpus", gpu_list, cells["gpus"]),
        "forward_port": _forward_port(cells["forward_port"], file, line),
        "image": _image(cells["image"], file, line),
        "extra_command": _extra_command(cells["extra_command"], file, line),
    }
    valid = all(value is not None for name, value in values.items() if name not in ("forward_port", "image"))
    valid = valid and _window_ok(values, file, line) and _gpus_exist(values["gpu_indices"], file, line)
    if not valid:
        return None
    return ReservationRecord(file=file.name, line=line, status=file.status, **values)


def _window_ok(values: dict, file: _File, line: int) -> bool:
    if values["end"] <= values["start"]:
        file.error(line, "end must be after start", "end")
        return False
    return True


def _gpus_exist(indices: tuple[int, ...], file: _File, line: int) -> bool:
    unknown = [index for index in indices if file.gpus is not None and index >= file.gpus]
    if unknown:
        file.error(line, f"GPU {unknown[0]} does not exist on this host (max.gpus is {file.gpus})", "gpus")
        return False
    return True


def _forward_port(text: str, file: _File, line: int) -> int | None:
    """None: the user's own port (also when the cell is wrong; the error is recorded)."""
    if is_null(text):
        return None
    return file.check(line, "forward_port", whole_number, text, what="forward_port")


def _image(text: str, file: _File, line: int) -> str | None:
    if is_null(text):
        return file.default_image
    if len(text) > MAX_REFERENCE:
        file.error(line, f"the image reference is longer than {MAX_REFERENCE} characters", "image")
    return text


def _extra_command(text: str, file: _File, line: int) -> str | None:
    command = "" if is_null(text) else text
    if len(command) > MAX_EXTRA_COMMAND:
        file.error(line, f"extra_command is longer than {MAX_EXTRA_COMMAND} characters", "extra_command")
        return None
    problem = command_problem(command)
    if problem:
        file.error(line, f"extra_command cannot be read as arguments ({problem})", "extra_command")
        return None
    return command
