"""DoPQ uploads: a zip's job queued with its image to build on its host, the build's
progress, and the contexts waiting on disk. Every job rule is the one `jobs.services`
applies to any job (`queue_job`)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from aivc_portal.scheduler import queue_host_task, queue_task
from aivc_portal.task_names import BUILD_JOB_IMAGE_TASK, SCHEDULE_JOBS_TASK
from bookings.services import request_resources
from containers.models import Host, Image
from jobs.build_contexts import context_create, context_remove, contexts_sweep
from jobs.models import Job, JobBuild
from jobs.services import clean_command, clean_time_limit, queue_job
from jobs.uploads import DopqUpload, check_dockerfile, parse_upload, unpacked_size


def _check_builds_allowed() -> None:
    if not settings.JOB_BUILDS_ALLOWED:
        raise ValidationError(
            {"upload": _("This lab does not build images from uploads; pick an image from the list.")},
            code="builds_off",
        )


def built_image_prefix(*, username: str) -> str:
    """The repository prefix of a user's built images: `aivc-build/<name>/`."""
    owner = re.sub(r"[^a-z0-9_.-]+", "-", username.lower()).strip("-._") or "user"
    return f"aivc-build/{owner}/"


def built_image_tag(*, username: str, upload: DopqUpload) -> str:
    """The user's own tag for the image an upload builds: their name, the config's name and
    the context's digest, so two users' (or two versions') images never share a tag."""
    return f"{built_image_prefix(username=username)}{upload.name}:{upload.digest[:12]}"


def job_submit_upload(
    *,
    user: User,
    upload: bytes,
    host: Host | int | str | None,
    cpus: object,
    time_limit_minutes: object,
    now: datetime | None = None,
) -> Job:
    """Queues a job from a DoPQ zip: the upload is checked (jobs.uploads), the job passes
    the same rules as any job with the config's memory and GPUs, and its image is built on
    the job's host before the scheduler may start it. The host is the one the image is
    built on, so it must be chosen."""
    now = now or timezone.now()
    _check_builds_allowed()
    if host in (None, ""):
        raise ValidationError(
            {"host": _("Choose the host: the image is built on that host's engine.")}, code="host_required"
        )
    _check_context_quota(user=user, size=unpacked_size(upload))
    context_name, context_file = context_create()
    try:
        with context_file:
            parsed = parse_upload(upload, into=context_file)
        job = _queue_upload(
            user=user,
            parsed=parsed,
            context_name=context_name,
            host=host,
            cpus=cpus,
            time_limit_minutes=time_limit_minutes,
            now=now,
        )
    except BaseException:
        context_remove(context_name)
        raise
    queue_host_task(BUILD_JOB_IMAGE_TASK, job.pk, host=job.host)
    return job


def _check_context_quota(*, user: User, size: int) -> None:
    """The contexts a user's waiting builds keep on disk stay under
    JOB_BUILD_CONTEXT_MAX_BYTES_PER_USER (checked with the zip's own unpacked size, before
    anything is written)."""
    held = (
        JobBuild.objects.filter(job__user=user, status=JobBuild.Status.BUILDING)
        .exclude(context_file="")
        .aggregate(total=Sum("context_size"))["total"]
        or 0
    )
    most = settings.JOB_BUILD_CONTEXT_MAX_BYTES_PER_USER
    if held + size > most:
        raise ValidationError(
            {
                "upload": _(
                    "Your uploads waiting to be built would hold more than %(most)s MB; wait for "
                    "them to build, or cancel one."
                )
                % {"most": most // 2**20}
            },
            code="contexts_over_quota",
        )


def build_bases() -> list[str]:
    """The images a Dockerfile may start from besides the user's own builds: the lab's
    active Image list and JOB_BUILD_BASE_IMAGES."""
    listed = Image.objects.filter(is_active=True).values_list("reference", flat=True)
    return [*listed, *settings.JOB_BUILD_BASE_IMAGES]


def _queue_upload(
    *,
    user: User,
    parsed: DopqUpload,
    context_name: str,
    host: Host | int | str,
    cpus: object,
    time_limit_minutes: object,
    now: datetime,
) -> Job:
    check_dockerfile(
        dockerfile=parsed.dockerfile,
        owner_prefix=built_image_prefix(username=user.username),
        bases=build_bases(),
    )
    cpus, memory_gb, gpu_count = request_resources(cpus, parsed.memory_gb, parsed.gpu_count)
    minutes = clean_time_limit(time_limit_minutes)
    command = clean_command(parsed.command) if parsed.command else ""
    tag = built_image_tag(username=user.username, upload=parsed)

    def built_image() -> Image:
        # Inactive: no booking form, job form or API lookup offers it; only this job runs it.
        image, _created = Image.objects.get_or_create(
            reference=tag,
            defaults={"is_active": False, "description": f"built from {user.username}'s DoPQ upload"},
        )
        return image

    with transaction.atomic():
        job = queue_job(
            user=user,
            host=host,
            image=built_image,
            command=command,
            cpus=cpus,
            memory_gb=memory_gb,
            gpu_count=gpu_count,
            minutes=minutes,
            now=now,
        )
        JobBuild.objects.create(
            job=job,
            name=parsed.name,
            executor_name=parsed.executor_name,
            context_file=context_name,
            context_size=parsed.context_size,
            context_digest=parsed.digest,
        )
    return job


def build_mark_started(*, build: JobBuild, now: datetime) -> bool:
    """Claims a waiting build for one agent; False if it is not waiting (done, or its job
    was cancelled)."""
    claimed = JobBuild.objects.filter(
        pk=build.pk, status=JobBuild.Status.BUILDING, started_at__isnull=True, job__status=Job.Status.QUEUED
    ).update(started_at=now)
    return bool(claimed)


BUILD_RETRY_AFTER = timedelta(minutes=1)
BUILD_CLAIM_SLACK = timedelta(minutes=2)


def builds_requeue(*, now: datetime) -> int:
    """Asks the hosts' agents again for builds still waiting: one never claimed a minute
    after its submit (the engine was unreachable, or the queued task was lost), or one
    claimed longer ago than a build may run (its agent died mid-build: the claim is
    released). The claim in `build_mark_started` makes a repeated request harmless.
    Returns how many were asked for."""
    waiting = JobBuild.objects.filter(status=JobBuild.Status.BUILDING, job__status=Job.Status.QUEUED)
    stale_claim = now - timedelta(seconds=settings.JOB_BUILD_TIMEOUT_S) - BUILD_CLAIM_SLACK
    waiting.filter(started_at__lt=stale_claim).update(started_at=None)
    unclaimed = waiting.filter(started_at__isnull=True, job__submitted_at__lt=now - BUILD_RETRY_AFTER)
    rows = list(unclaimed.select_related("job__host"))
    for build in rows:
        queue_host_task(BUILD_JOB_IMAGE_TASK, build.job_id, host=build.job.host)
    return len(rows)


@transaction.atomic
def build_finish(*, build: JobBuild, now: datetime, failure: str = "") -> None:
    """Records a build's end. Built: the context is dropped and the scheduler may start the
    job. Failed: the job fails with the build's message (if it is still queued)."""
    build.finished_at = now
    transaction.on_commit(partial(context_remove, build.context_file))
    build.context_file = ""
    if failure:
        build.status, build.message = JobBuild.Status.FAILED, failure[:500]
    else:
        build.status = JobBuild.Status.BUILT
    build.save(update_fields=["finished_at", "context_file", "status", "message"])
    if failure:
        Job.objects.filter(pk=build.job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.FAILED,
            finished_at=now,
            status_message=(_("Its image could not be built: %(why)s") % {"why": failure})[:500],
        )
    queue_task(SCHEDULE_JOBS_TASK)


# A context younger than this may belong to a submit still being written.
CONTEXT_SWEEP_AGE_S = 3600


def build_contexts_sweep() -> int:
    """Removes stored contexts no waiting build needs: a cancelled job's (its row let go
    of it, so it stops counting against the user's cap), and files no row names (a submit
    that failed half-way). Returns how many files."""
    stored = JobBuild.objects.filter(status=JobBuild.Status.BUILDING).exclude(context_file="")
    dropped = stored.exclude(job__status=Job.Status.QUEUED)
    names = list(dropped.values_list("context_file", flat=True))
    dropped.update(context_file="")
    for name in names:
        context_remove(name)
    keep = stored.values_list("context_file", flat=True)
    return len(names) + contexts_sweep(keep=list(keep), older_than_s=CONTEXT_SWEEP_AGE_S)
