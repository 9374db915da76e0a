"""Cross-process locks for scheduler work. On PostgreSQL a session advisory lock (released
by the server if the process dies, even by SIGKILL); elsewhere (SQLite, one machine) an
flock on a file, which the kernel releases the same way."""

from __future__ import annotations

import fcntl
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

POLL_S = 0.05


def _key(name: str) -> int:
    # Signed 32-bit, as pg_advisory_lock(bigint) takes any; scoped so test runs never clash.
    return zlib.crc32(f"{settings.CONTAINER_SCOPE}:{name}".encode())


@contextmanager
def exclusive(name: str, *, wait_s: float = 0.0) -> Iterator[bool]:
    """Holds the lock `name` for the block; yields False (and holds nothing) if another
    process kept it for longer than `wait_s`."""
    if connection.vendor == "postgresql":
        with _advisory(_key(name), wait_s) as acquired:
            yield acquired
    else:
        with _flock(_key(name), wait_s) as acquired:
            yield acquired


@contextmanager
def _advisory(key: int, wait_s: float) -> Iterator[bool]:
    deadline = time.monotonic() + wait_s
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if cursor.fetchone()[0]:
                break
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(POLL_S)
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


@contextmanager
def _flock(key: int, wait_s: float) -> Iterator[bool]:
    folder = Path(tempfile.gettempdir()) / "aivc-locks"
    folder.mkdir(exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(folder / f"{key}.lock", "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(POLL_S)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
