"""Scheduler tasks for batch jobs (django-q2): thin, they call jobs.scheduling."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from containers import job_builds
from containers.locks import exclusive
from jobs.build_services import build_contexts_sweep, builds_requeue
from jobs.scheduling import run_pass

LOCK_WAIT_S = 30


def schedule_jobs(now: datetime | None = None) -> str:
    """One scheduling pass. Two at once take turns on a lock, and a pass that finds the
    work done starts nothing twice: each start re-checks the job is still queued."""
    with exclusive("jobs:schedule", wait_s=LOCK_WAIT_S) as acquired:
        if not acquired:
            return "another pass held the lock"
        now = now or timezone.now()
        report = run_pass(now=now)
        # Every minute, so an upload whose build was never picked up is asked for again.
        builds_requeue(now=now)
        return str(report)


def build_job_image(job_id: int, now: datetime | None = None) -> str:
    """Builds a DoPQ upload's image on this host's agent (queued to the job's host)."""
    return job_builds.build_job_image(job_id=job_id, now=now or timezone.now())


def sweep_build_contexts() -> str:
    return f"removed {build_contexts_sweep()} stored build context(s)"
