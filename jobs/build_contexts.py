"""Where the checked build contexts of DoPQ uploads wait for their build: files in
JOB_BUILD_CONTEXT_ROOT (0600, in a 0700 folder), never rows in the database. The web writes
a context, the build host's agent reads it, so a lab whose agents run on other machines
puts this folder on storage both see (like JOB_LOG_ROOT)."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

NAME = re.compile(r"[0-9a-f]{32}\.tar")


def context_path(name: str) -> Path:
    """The file of a stored context; a name that is not one this module made is refused,
    so a row edited by hand cannot point the agent at another file."""
    if not NAME.fullmatch(name):
        raise ValueError(f"not a build context name: {name!r}")
    return Path(settings.JOB_BUILD_CONTEXT_ROOT) / name


def context_create() -> tuple[str, BinaryIO]:
    """A new, empty context file opened for writing, and its name."""
    root = Path(settings.JOB_BUILD_CONTEXT_ROOT)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}.tar"
    descriptor = os.open(context_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    return name, os.fdopen(descriptor, "wb")


def context_remove(name: str) -> None:
    if name:
        context_path(name).unlink(missing_ok=True)


def contexts_sweep(*, keep: Iterable[str], older_than_s: int) -> int:
    """Removes the stored contexts not in `keep` (a cancelled job's, one whose submit failed
    half-way) that are older than `older_than_s`, so a submit being written is never taken.
    Returns how many."""
    root = Path(settings.JOB_BUILD_CONTEXT_ROOT)
    kept, removed = set(keep), 0
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    for entry in os.scandir(root):
        old = entry.stat(follow_symlinks=False).st_mtime < cutoff
        if NAME.fullmatch(entry.name) and entry.name not in kept and old:
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed
