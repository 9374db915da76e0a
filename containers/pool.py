"""The launch pool: a tick's steps for many reservations, side by side on a few threads."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from django.conf import settings
from django.db import connection, connections

from containers.runtime import EngineUnavailable

# What the steps did is written this often (e.g. containers launched marked running), so a
# student sees "running" within a second or two of their start even while a hundred others
# launch.
FLUSH_EVERY_S = 1.0
Item = TypeVar("Item")  # a reservation, or a batch job


def in_parallel(
    step: Callable[[Item], None],
    reservations: Iterable[Item],
    *,
    flush: Callable[[], None] | None = None,
) -> None:
    """Runs `step` for each reservation on up to AGENT_LAUNCH_WORKERS threads, each with
    its own database connection, closed when the thread has no more work. Inside a
    transaction (a test's) other connections cannot see its rows, so the steps run one
    after another. `flush`, if given, is called on this thread about every FLUSH_EVERY_S
    while the steps run (what they did is written in batches, yet soon). The first
    EngineUnavailable is raised once all steps are done."""
    pending = list(reservations)
    workers = min(settings.AGENT_LAUNCH_WORKERS, len(pending))
    flushed = time.monotonic()

    def flush_when_due() -> None:
        nonlocal flushed
        if flush is not None and time.monotonic() - flushed >= FLUSH_EVERY_S:
            flush()
            flushed = time.monotonic()

    if workers <= 1 or connection.in_atomic_block:
        for reservation in pending:
            step(reservation)
            flush_when_due()
        return
    work: queue.SimpleQueue[Item] = queue.SimpleQueue()
    for reservation in pending:
        work.put(reservation)
    problems: list[EngineUnavailable] = []

    def worker() -> None:
        try:
            while True:
                try:
                    reservation = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    step(reservation)
                except EngineUnavailable as error:
                    problems.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, name=f"launch-{n}") for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=FLUSH_EVERY_S)
            flush_when_due()
    if problems:
        raise problems[0]
