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


def build_log_path(job_id: int) -> Path:
    return Path(settings.JOB_LOG_ROOT) / f"build-{int(job_id)}.log"


def log_store(*, job: Job, chunks: Iterable[bytes]) -> int:
    """Replaces the job's log with the output in `chunks`, keeping only the last
    JOB_LOG_MAX_BYTES. Returns the size kept."""
    kept, truncated = _write_capped(log_path(job.pk), chunks)
    Job.objects.filter(pk=job.pk).update(log_size=kept, log_truncated=truncated)
    job.log_size, job.log_truncated = kept, truncated
    return kept


def build_log_store(*, job_id: int, output: bytes) -> int:
    """Keeps the output of a DoPQ upload's image build beside the job's log, capped alike."""
    return _write_capped(build_log_path(job_id), [output])[0]


def _write_capped(path: Path, chunks: Iterable[bytes]) -> tuple[int, bool]:
    """Writes the last JOB_LOG_MAX_BYTES of `chunks` to a new file and renames it over
    `path`, so a reader never sees half a log. Returns the size kept and whether output
    was dropped."""
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
    partial = path.with_suffix(".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(kept)
    os.replace(partial, path)
    return len(kept), total > limit


def log_tail(*, job_id: int, lines: int, build: bool = False) -> str:
    """The last `lines` lines of the stored log, or of the image build's log (reads only
    its end)."""
    path = build_log_path(job_id) if build else log_path(job_id)
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
