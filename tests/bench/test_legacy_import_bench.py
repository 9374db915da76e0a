"""Benchmark: the legacy import of a long history (`make bench`).

Writes the old system's files with AIVC_BENCH_IMPORT_ROWS used.csv rows (default 5,000:
years of a busy lab server) over three accounts and four GPUs, then times the parse
alone, a dry run, the first import, and a second import that must change nothing, and
counts the statements each write makes per row. Figures: docs/benchmarks/legacy-import.md.
"""

import os
import time
from datetime import datetime, timedelta

import pytest
from django.db import connection

from bookings.legacy_import import import_legacy, parse_legacy
from tests.bench.conftest import machine
from tests.bookings.legacy_files import HEADER, write_old_system

pytestmark = [pytest.mark.bench, pytest.mark.django_db]

ROWS = int(os.environ.get("AIVC_BENCH_IMPORT_ROWS", "5000"))
USERS = ("m11007s05", "m11107s01", "m11207s09")


def history(rows: int) -> str:
    start = datetime(2022, 1, 1, 9)
    lines = []
    for n in range(rows):
        begin = start + timedelta(hours=3 * n)
        end = begin + timedelta(hours=2)
        window = f"{begin:%Y-%m-%d %H:%M:%S},{end:%Y-%m-%d %H:%M:%S}"
        lines.append(f'{window},{USERS[n % 3]},2,8,"[{n % 4}]",null,null,null\n')
    return HEADER + "".join(lines)


def timed(run) -> tuple[float, int]:
    """Seconds and statements (savepoints included) of `run()`."""
    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        began = time.perf_counter()
        run()
        return time.perf_counter() - began, statements


def test_importing_a_long_history(tmp_path, write_figures):
    cfg, jobs = write_old_system(tmp_path, used=history(ROWS))
    run = lambda **kwargs: import_legacy(cfg_dir=cfg, jobs_dir=jobs, host_name="gpu-old", **kwargs)  # noqa: E731
    parse_s, _ = timed(lambda: parse_legacy(cfg_dir=cfg, jobs_dir=jobs))
    dry_s, dry_q = timed(lambda: run(dry_run=True))
    first_s, first_q = timed(run)
    second_s, second_q = timed(lambda: run())
    assert run().changes == []
    rows = ROWS + 2  # and the running and scheduled rows of the sample files
    load = os.getloadavg()
    write_figures(
        "legacy-import.md",
        f"""# Legacy import: a long history

`tests/bench/test_legacy_import_bench.py`: {ROWS:,} used.csv rows (plus the sample files'
running and scheduled rows) over 3 accounts and 4 GPUs, {connection.vendor}, {machine()},
load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} when it finished (the machine is
shared: other engineers' tests inflate these figures).

| step | seconds | rows/s | statements | statements per row |
|---|---|---|---|---|
| parse alone (no database) | {parse_s:.2f} | {rows / parse_s:,.0f} | 0 | 0 |
| dry run (all writes, rolled back) | {dry_s:.2f} | {rows / dry_s:,.0f} | {dry_q:,} | {dry_q / rows:.1f} |
| first import | {first_s:.2f} | {rows / first_s:,.0f} | {first_q:,} | {first_q / rows:.1f} |
| second import (no change) | {second_s:.2f} | {rows / second_s:,.0f} | {second_q:,} | {second_q / rows:.1f} |

Per reservation the writer goes through `bookings.import_services.reservation_import`: the host
row lock (the one lock order of every capacity write), the natural-key read, the insert or
the changed fields, the GPU allocations, inside one savepoint, so a refused row is listed
with its line while the others are still tried.
""",
    )
