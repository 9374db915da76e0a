"""Job logs, kept in JOB_LOG_ROOT: a portal-owned folder that no container mounts, so a job
cannot rewrite its own record. The container lifecycle writes the log (while the job runs,
each tick, and once more when it ends); pages read it. At most JOB_LOG_MAX_BYTES are kept:
the end of the output, which says how a job finished."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from jobs.models import Job

TAIL_READ_BYTES = 256 * 1024


def log_path(job_id: int) -> Path:
    return Path(settings.JOB_LOG_ROOT) / f"job-{int(job_id)}.log"


def log_store(*, job: Job, chunks: Iterable[bytes]) -> int:
    """Replaces the job's log with the output in `chunks`, keeping only the last
    JOB_LOG_MAX_BYTES; writes a new file and renames it over the old, so a reader never
    sees half a log. Returns the size kept."""
    limit = settings.JOB_LOG_MAX_BYTES
    kept = bytearray()
    total = 0
    for chunk in chunks:
        total += len(chunk)
        kept += chunk
        if len(kept) > 2 * limit:
            del kept[: len(kept) - limit]
    if len(kept) > limit:
        del kept[: len(kept) - limit]
    folder = Path(settings.JOB_LOG_ROOT)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = log_path(job.pk)
    partial = path.with_suffix(".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(kept)
    os.replace(partial, path)
    truncated = total > limit
    Job.objects.filter(pk=job.pk).update(log_size=len(kept), log_truncated=truncated)
    job.log_size, job.log_truncated = len(kept), truncated
    return len(kept)


def log_tail(*, job_id: int, lines: int) -> str:
    """The last `lines` lines of the stored log (reads only its end)."""
    path = log_path(job_id)
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(size - TAIL_READ_BYTES, 0))
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def log_open(*, job_id: int):
    """The stored log as an open binary file, or None if the job wrote nothing yet."""
    path = log_path(job_id)
    return open(path, "rb") if path.exists() else None
