"""Builds the image of a DoPQ upload on the job's host (run by the host's agent, never by
the web). The build's output is kept in the portal-owned log folder; a failed or too-long
build fails only its own job, with an event saying why, and nothing else stops."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

from containers import events, services
from containers.runtime import BuildFailed, EngineUnavailable, get_runtime
from containers.specs import GIB, LABEL_JOB, LABEL_USER
from jobs import logs
from jobs.models import JobBuild
from jobs.services import build_finish, build_mark_started


def build_job_image(*, job_id: int, now: datetime) -> str:
    """Builds the upload's image for job `job_id` once; returns what happened, for the
    task's record. An engine that cannot be reached leaves the build waiting (unclaimed)
    for the next try."""
    build = (
        JobBuild.objects.select_related("job__user", "job__host", "job__image").filter(job_id=job_id).first()
    )
    if build is None or not build_mark_started(build=build, now=now):
        return "nothing to build"
    job = build.job
    runtime = get_runtime(job.host)
    labels = {LABEL_JOB: str(job.pk), LABEL_USER: job.user.username}
    try:
        output = runtime.build_image(
            tag=job.image.reference,
            context=bytes(build.context),
            labels=labels,
            timeout_s=settings.JOB_BUILD_TIMEOUT_S,
            # A build's steps get no more memory than its job will.
            memory_bytes=job.memory_gb * GIB,
        )
    except EngineUnavailable:
        JobBuild.objects.filter(pk=build.pk).update(started_at=None)
        raise
    except BuildFailed as error:
        logs.build_log_store(job_id=job.pk, output=error.output)
        build_finish(build=build, now=now, failure=str(error))
        event = events.job_build_failed(username=job.user.username, job_id=job.pk, cause=str(error))
        services.event_record(event=event, host=job.host, user=job.user, now=now)
        return f"build failed: {error}"
    logs.build_log_store(job_id=job.pk, output=output)
    build_finish(build=build, now=now)
    event = events.job_image_built(username=job.user.username, job_id=job.pk, tag=job.image.reference)
    services.event_record(event=event, host=job.host, user=job.user, now=now)
    return f"built {job.image.reference}"
