"""Builds the image of a DoPQ upload on the job's host (run by the host's agent, never by
the web), inside the build fence (docs/security.md), and removes the images builds made
once nobody used them for JOB_BUILD_IMAGE_KEEP_DAYS or the engine's disk runs low. The
build's output is kept in the portal-owned log folder; a failed or too-long build fails
only its own job, with an event saying why, and nothing else stops."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.db.models.functions import Coalesce
from django.utils.dateparse import parse_datetime

from containers import events, services
from containers.build_fence import FenceMissing, cgroup_parent_argument, ensure_pids_fence
from containers.models import Host
from containers.runtime import (
    BuildFailed,
    BuildFence,
    BuiltImage,
    ContainerRuntime,
    EngineUnavailable,
    get_runtime,
)
from containers.specs import GIB, LABEL_BUILT, LABEL_JOB, LABEL_USER
from jobs import logs
from jobs.build_contexts import context_path
from jobs.build_services import build_finish, build_mark_started
from jobs.models import Job, JobBuild


def build_fence(*, memory_bytes: int, cgroup_driver: str = "") -> BuildFence:
    """The fence of one build: the settings' network, proxy, CPUs and time, the job's memory,
    and the parent cgroup whose pids limit this host has (ensured here)."""
    parent = ""
    if settings.JOB_BUILD_PIDS_LIMIT:
        if cgroup_driver == "systemd" and not settings.JOB_BUILD_CGROUP_PARENT.endswith(".slice"):
            raise FenceMissing(
                "the engine uses the systemd cgroup driver: set JOB_BUILD_CGROUP_PARENT to a slice "
                "such as aivc-build.slice and run deploy/build-fence/setup.sh"
            )
        ensure_pids_fence(parent=settings.JOB_BUILD_CGROUP_PARENT, limit=settings.JOB_BUILD_PIDS_LIMIT)
        parent = cgroup_parent_argument(settings.JOB_BUILD_CGROUP_PARENT)
    return BuildFence(
        timeout_s=settings.JOB_BUILD_TIMEOUT_S,
        memory_bytes=memory_bytes,
        nano_cpus=int(settings.JOB_BUILD_CPUS * 1e9),
        network=settings.JOB_BUILD_NETWORK,
        proxy=settings.JOB_BUILD_PROXY,
        cgroup_parent=parent,
    )


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
    labels = {LABEL_JOB: str(job.pk), LABEL_USER: job.user.username, LABEL_BUILT: settings.CONTAINER_SCOPE}
    try:
        _check_space(runtime=runtime, host=job.host, now=now)
        # A build's steps get no more memory than its job will.
        fence = build_fence(memory_bytes=job.memory_gb * GIB, cgroup_driver=runtime.cgroup_driver())
        try:
            context = context_path(build.context_file).open("rb")
        except (OSError, ValueError):
            raise BuildFailed(
                "the upload's build context is not on this server (JOB_BUILD_CONTEXT_ROOT must be "
                "the same folder for the web and this host's agent)"
            ) from None
        with context:
            output = runtime.build_image(tag=job.image.reference, context=context, labels=labels, fence=fence)
    except EngineUnavailable:
        JobBuild.objects.filter(pk=build.pk).update(started_at=None)
        raise
    except (BuildFailed, FenceMissing) as error:
        cause = str(error) if isinstance(error, BuildFailed) else f"the build fence is not installed: {error}"
        output = getattr(error, "output", b"") or f"ERROR: {cause}\n".encode()
        logs.build_log_store(job_id=job.pk, output=output)
        build_finish(build=build, now=now, failure=cause)
        event = events.job_build_failed(username=job.user.username, job_id=job.pk, cause=cause)
        services.event_record(event=event, host=job.host, user=job.user, now=now)
        return f"build failed: {cause}"
    logs.build_log_store(job_id=job.pk, output=output)
    build_finish(build=build, now=now)
    event = events.job_image_built(username=job.user.username, job_id=job.pk, tag=job.image.reference)
    services.event_record(event=event, host=job.host, user=job.user, now=now)
    return f"built {job.image.reference}"


def _check_space(*, runtime: ContainerRuntime, host: Host, now: datetime) -> None:
    """A build needs JOB_BUILD_MIN_FREE_GB free on the engine's disk; old builds are removed
    first if that makes room. Unknown free space (a remote engine) is not checked."""
    floor = settings.JOB_BUILD_MIN_FREE_GB * GIB
    free = runtime.build_space_free()
    if free is None or free >= floor:
        return
    built_images_prune(runtime=runtime, host=host, now=now)
    free = runtime.build_space_free()
    if free is not None and free < floor:
        raise BuildFailed(
            f"{host.name} has {free / GIB:.1f} GB free for images and a build needs at least "
            f"{settings.JOB_BUILD_MIN_FREE_GB} GB; try again later or pick another host"
        )


def _last_uses(images: list[BuiltImage]) -> tuple[dict[str, datetime], set[str]]:
    """When each built tag's jobs last used it (their end, start or submit), and the tags a
    job still waits on or runs with."""
    tags = [tag for image in images for tag in image.tags]
    rows = (
        Job.objects.filter(image__reference__in=tags)
        .values("image__reference")
        .annotate(
            last=Max(Coalesce("finished_at", "started_at", "submitted_at")),
            waiting=Max("pk", filter=Q(status__in=[Job.Status.QUEUED, *Job.ACTIVE_STATUSES])),
        )
    )
    last = {row["image__reference"]: row["last"] for row in rows}
    busy = {row["image__reference"] for row in rows if row["waiting"] is not None}
    return last, busy


def _created(text: str) -> datetime | None:
    """The engine's creation time (RFC 3339, UTC, nanoseconds) to the second."""
    match = re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", text)
    return parse_datetime(match.group(0) + "+00:00") if match else None


def built_images_prune(*, runtime: ContainerRuntime, host: Host, now: datetime) -> list[str]:
    """Removes this engine's images that the portal built (the LABEL_BUILT label of this
    portal's scope; never any other image) and no waiting or running job needs: those
    unused for JOB_BUILD_IMAGE_KEEP_DAYS, and, while the engine's free space is under
    JOB_BUILD_MIN_FREE_GB, the least recently used of the others. Returns the removed tags."""
    images = runtime.built_images(label=f"{LABEL_BUILT}={settings.CONTAINER_SCOPE}")
    last, busy = _last_uses(images)

    def last_use(image: BuiltImage) -> datetime:
        uses = [last[tag] for tag in image.tags if last.get(tag)]
        return max(uses) if uses else _created(image.created) or now

    idle = sorted(
        (image for image in images if not any(tag in busy for tag in image.tags)),
        key=last_use,
    )
    stale_before = now - timedelta(days=settings.JOB_BUILD_IMAGE_KEEP_DAYS)
    floor = settings.JOB_BUILD_MIN_FREE_GB * GIB
    removed: list[str] = []
    for image in idle:
        free = runtime.build_space_free()
        short = free is not None and free < floor
        if (last_use(image) < stale_before or short) and runtime.remove_image(image.id):
            removed.extend(image.tags or (image.id,))
    if removed:
        event = events.built_images_removed(host_name=host.name, tags=removed)
        services.event_record(event=event, host=host, user=None, now=now)
    return removed
