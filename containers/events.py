"""The catalogue of monitor-log events: every sign with its level, and the builders of the
lifecycle's messages. The lifecycle, the space audit and telemetry name an event from here
and hand it to `services.event_record`, so a sign's level and wording live in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from django.utils.translation import gettext_noop

from containers.models import ContainerEvent

Level = ContainerEvent.Level


@dataclass(frozen=True)
class Kind:
    """What kind of line an event is: its level and sign (INFO lines carry no sign)."""

    level: str
    sign: str = ""


@dataclass(frozen=True)
class Event:
    """One line: `message` is the English line of the monitor log; `template` (a msgid of
    the catalogue) and `params` let a student's page say it again in their language
    (ContainerEvent.sentence). An Event built from a message alone stays English."""

    kind: Kind
    message: str
    template: str = ""
    params: Mapping[str, object] = field(default_factory=dict)


def said(kind: Kind, template: str, **params: object) -> Event:
    """An event whose line is `template % params`; each parameter must be plain JSON (text or
    a number), as it is stored beside the line."""
    return Event(kind, template % params, template, params)


def _text(error: object) -> str:
    return str(error)


# Signs and levels --------------------------------------------------------------------

INFO = Kind(Level.INFO)
ENGINE_UNAVAILABLE = Kind(Level.ERROR, "EngineUnavailable")
RECONCILE_ERROR = Kind(Level.ERROR, "ReconcileError")
NEVER_STARTED = Kind(Level.WARNING, "NeverStarted")
ORPHAN_CONTAINER = Kind(Level.WARNING, "OrphanContainer")
CONTAINER_DIED_RESTARTING = Kind(Level.WARNING, "ContainerDied")
CONTAINER_DIED_FOR_GOOD = Kind(Level.ERROR, "ContainerDied")
SPACE_WARNING = Kind(Level.WARNING, "SpaceWarning")
SPACE_AUDIT_TIMEOUT = Kind(Level.WARNING, "SpaceAuditTimeout")
SPACE_AUDIT_UNREADABLE = Kind(Level.WARNING, "SpaceAuditUnreadable")
IMAGE_MISSING = Kind(Level.ERROR, "ImageMissing")
IMAGE_PULL_FAILED = Kind(Level.ERROR, "ImagePullFailed")
IMAGE_NEEDS_PASSWORD = Kind(Level.ERROR, "ImageNeedsPassword")
IMAGE_INACTIVE = Kind(Level.ERROR, "ImageInactive")
FOLDER_PROBLEM = Kind(Level.ERROR, "FolderProblem")
LAUNCH_ERROR = Kind(Level.ERROR, "LaunchError")
JOB_BUILD_FAILED = Kind(Level.ERROR, "JobBuildFailed")
UNEXPECTED_ERROR = Kind(Level.ERROR, "UnexpectedError")
GPU_INVENTORY_ERROR = Kind(Level.ERROR, "GPUInventoryError")
GPU_DUPLICATE_WARNING = Kind(Level.WARNING, "GPUDuplicateWarning")
GPU_IDLE_WARNING = Kind(Level.WARNING, "GPUIdleWarning")
GPU_IDLE_RELEASE = Kind(Level.WARNING, "GPUIdleRelease")
GPU_RENUMBERED = Kind(Level.WARNING, "GPURenumbered")
AGENT_SILENT = Kind(Level.ERROR, "AgentSilent")
AGENT_BACK = Kind(Level.ERROR, "AgentBack")


# Messages of the reconcile tick --------------------------------------------------------


def engine_unavailable(*, host_name: str, error: Exception) -> Event:
    return said(
        ENGINE_UNAVAILABLE,
        gettext_noop(
            "The container engine of %(host)s does not answer (%(error)s); the next tick tries again"
        ),
        host=host_name,
        error=_text(error),
    )


def reconcile_error(*, host_name: str, error: Exception) -> Event:
    return said(
        RECONCILE_ERROR,
        gettext_noop("Reconciling %(host)s stopped half way (%(error)s); the next tick tries again"),
        host=host_name,
        error=_text(error),
    )


def host_tick_crashed(*, host_name: str, error: Exception) -> Event:
    return said(
        UNEXPECTED_ERROR,
        gettext_noop(
            "Reconciling %(host)s stopped on an unexpected %(error_type)s (%(error)s); "
            "the other hosts went on and the next tick tries again"
        ),
        host=host_name,
        error_type=type(error).__name__,
        error=_text(error),
    )


def host_step_crashed(*, host_name: str, error: Exception) -> Event:
    return said(
        UNEXPECTED_ERROR,
        gettext_noop(
            "A step of reconciling %(host)s stopped on an unexpected %(error_type)s (%(error)s); "
            "the rest of the tick went on and the next tick tries again"
        ),
        host=host_name,
        error_type=type(error).__name__,
        error=_text(error),
    )


def never_started(*, username: str, reservation_id: int, reason: str) -> Event:
    return said(
        NEVER_STARTED,
        gettext_noop("%(username)s's reservation #%(reservation_id)s ended unlaunched (%(reason)s)"),
        username=username,
        reservation_id=reservation_id,
        reason=reason,
    )


def orphan_removed(*, container_name: str) -> Event:
    return said(
        ORPHAN_CONTAINER,
        gettext_noop("Removed container %(container)s, which no reservation owns"),
        container=container_name,
    )


def container_removed(*, username: str, container_name: str, reservation_id: int, status: str) -> Event:
    return said(
        INFO,
        gettext_noop(
            "%(username)s's container %(container)s was stopped and removed "
            "(reservation #%(reservation_id)s %(status)s)"
        ),
        username=username,
        container=container_name,
        reservation_id=reservation_id,
        status=status,
    )


def recreated_on_request(*, username: str) -> Event:
    return said(
        INFO,
        gettext_noop("%(username)s's container is recreated at a maintainer's request"),
        username=username,
    )


def died_for_good(*, username: str, what: str, limit: int) -> Event:
    return said(
        CONTAINER_DIED_FOR_GOOD,
        gettext_noop("%(username)s's container %(what)s; %(limit)s restarts used, reservation failed"),
        username=username,
        what=what,
        limit=limit,
    )


def died_restarting(*, username: str, what: str, count: int, limit: int) -> Event:
    return said(
        CONTAINER_DIED_RESTARTING,
        gettext_noop(
            "%(username)s's container %(what)s during the reservation; restarting it (%(count)s of %(limit)s)"
        ),
        username=username,
        what=what,
        count=count,
        limit=limit,
    )


def launch_blocked_by_space(*, username: str, blocked: str) -> Event:
    return said(
        SPACE_WARNING,
        gettext_noop("%(username)s is over quota, container not started. %(blocked)s"),
        username=username,
        blocked=blocked,
    )


def launch_failed(*, kind: Kind, username: str, message: str) -> Event:
    return said(
        kind,
        gettext_noop("%(username)s's container did not start: %(message)s"),
        username=username,
        message=message,
    )


def launch_retrying(*, kind: Kind, username: str, cause: str, count: int, limit: int) -> Event:
    return said(
        kind,
        gettext_noop(
            "%(username)s's container did not start (%(cause)s); "
            "trying again next tick (%(count)s of %(limit)s)"
        ),
        username=username,
        cause=cause,
        count=count,
        limit=limit,
    )


def started(
    *, username: str, container_name: str, cpus: str, memory_gb: int, gpus: str, ssh_port: int
) -> Event:
    return said(
        INFO,
        gettext_noop(
            "%(username)s's container %(container)s started "
            "(CPUs %(cpus)s, memory %(memory_gb)s GiB, GPUs %(gpus)s, port %(ssh_port)s)"
        ),
        username=username,
        container=container_name,
        cpus=str(cpus),
        memory_gb=memory_gb,
        gpus=str(gpus),
        ssh_port=ssh_port,
    )


# Messages of the space audit -----------------------------------------------------------


def over_quota(
    *,
    username: str,
    work_gb: float,
    work_quota: int,
    backup_gb: float,
    backup_quota: int,
    home_gb: float = 0.0,
    home_quota: int | None = None,
) -> Event:
    sizes = {
        "username": username,
        "work_gb": work_gb,
        "work_quota": work_quota,
        "backup_gb": backup_gb,
        "backup_quota": backup_quota,
    }
    if home_quota is None:
        return said(
            SPACE_WARNING,
            gettext_noop(
                "%(username)s is over-use the work_dir %(work_gb).1fGB of %(work_quota)sGB, "
                "and backup_dir %(backup_gb).1fGB of %(backup_quota)sGB"
            ),
            **sizes,
        )
    return said(
        SPACE_WARNING,
        gettext_noop(
            "%(username)s is over-use the work_dir %(work_gb).1fGB of %(work_quota)sGB, "
            "and backup_dir %(backup_gb).1fGB of %(backup_quota)sGB, "
            "and home_dir %(home_gb).1fGB of %(home_quota)sGB"
        ),
        **sizes,
        home_gb=home_gb,
        home_quota=home_quota,
    )


def audit_timed_out(*, username: str, host_name: str, timeout_s: float) -> Event:
    return said(
        SPACE_AUDIT_TIMEOUT,
        gettext_noop(
            "The size of %(username)s's folders on %(host)s is unknown: "
            "measuring took longer than %(timeout_s)g s"
        ),
        username=username,
        host=host_name,
        timeout_s=timeout_s,
    )


def audit_unreadable(*, username: str, host_name: str, path: str) -> Event:
    return said(
        SPACE_AUDIT_UNREADABLE,
        gettext_noop(
            "The space audit cannot read %(username)s's %(path)s on %(host)s; "
            "it counts as over quota until it can"
        ),
        username=username,
        path=path,
        host=host_name,
    )


def back_under_quota(*, username: str) -> Event:
    return said(
        INFO,
        gettext_noop("%(username)s is back under quota; the blocked reservation launches"),
        username=username,
    )


# Batch jobs --------------------------------------------------------------------------------
# Every finished job leaves one JobFinished line (notifications look for the sign); a job
# that did not succeed is a warning.

JOB_FINISHED = Kind(Level.INFO, "JobFinished")
JOB_FINISHED_BADLY = Kind(Level.WARNING, "JobFinished")
# The words a job's status is said with (its choices' values, spaced); marked so each is
# in the catalogue and a student reads "succeeded" in their language (ContainerEvent.TRANSLATED_PARAMS).
JOB_STATUS_WORDS = {
    "succeeded": gettext_noop("succeeded"),
    "failed": gettext_noop("failed"),
    "cancelled": gettext_noop("cancelled"),
    "timed_out": gettext_noop("timed out"),
}


def job_started(*, username: str, job_id: int, container_name: str, gpus: str) -> Event:
    return said(
        INFO,
        gettext_noop("%(username)s's job #%(job_id)s started in %(container)s (GPUs %(gpus)s)"),
        username=username,
        job_id=job_id,
        container=container_name,
        gpus=str(gpus),
    )


def job_finished(
    *, username: str, job_id: int, status: str, exit_code: int | None, detail: str = ""
) -> Event:
    kind = JOB_FINISHED if status in ("succeeded", "cancelled") else JOB_FINISHED_BADLY
    word = JOB_STATUS_WORDS.get(status, status.replace("_", " "))
    params = {"username": username, "job_id": job_id, "status_word": word, "exit_code": exit_code}
    if exit_code is None and not detail:
        template = gettext_noop("%(username)s's job #%(job_id)s %(status_word)s (no exit code)")
    elif exit_code is None:
        template = gettext_noop("%(username)s's job #%(job_id)s %(status_word)s (no exit code): %(detail)s")
    elif not detail:
        template = gettext_noop("%(username)s's job #%(job_id)s %(status_word)s (exit code %(exit_code)s)")
    else:
        template = gettext_noop(
            "%(username)s's job #%(job_id)s %(status_word)s (exit code %(exit_code)s): %(detail)s"
        )
    if detail:
        params["detail"] = detail
    return said(kind, template, **params)


JOB_LOG_UNSAVED = Kind(Level.ERROR, "JobLogUnsaved")


def job_log_unsaved(*, username: str, job_id: int, error: OSError) -> Event:
    return said(
        JOB_LOG_UNSAVED,
        gettext_noop("%(username)s's job #%(job_id)s: its output could not be saved (%(error)s)"),
        username=username,
        job_id=job_id,
        error=_text(error),
    )


def job_image_built(*, username: str, job_id: int, tag: str) -> Event:
    return said(
        INFO,
        gettext_noop("%(username)s's job #%(job_id)s: image %(tag)s built from the upload"),
        username=username,
        job_id=job_id,
        tag=tag,
    )


def job_build_failed(*, username: str, job_id: int, cause: str) -> Event:
    return said(
        JOB_BUILD_FAILED,
        gettext_noop("%(username)s's job #%(job_id)s failed: its image could not be built (%(cause)s)"),
        username=username,
        job_id=job_id,
        cause=cause,
    )


def built_images_removed(*, host_name: str, tags: list[str]) -> Event:
    shown = ", ".join(tags[:10]) + (f" and {len(tags) - 10} more" if len(tags) > 10 else "")
    return Event(INFO, f"Removed {len(tags)} built image(s) no job used lately on {host_name}: {shown}")


# Messages of the image check ahead of a start ----------------------------------------------


def image_pulled(*, reference: str, host_name: str) -> Event:
    return said(
        INFO,
        gettext_noop("Pulled the image %(reference)s on %(host)s ahead of a reservation's start"),
        reference=reference,
        host=host_name,
    )


def image_pull_failed(*, reference: str, host_name: str, error: Exception) -> Event:
    return said(
        IMAGE_PULL_FAILED,
        gettext_noop(
            "The image %(reference)s is not on %(host)s and pulling it failed (%(error)s); "
            "build or pull it there, or deactivate the image"
        ),
        reference=reference,
        host=host_name,
        error=_text(error),
    )


# What a maintainer did to a user's reservation or job (admin actions) ----------------------
# The owner sees who: maintainers are people a student can ask, and "who cancelled my
# booking" must have an answer. A change that takes time away is a warning.

CHANGED_BY_STAFF = Kind(Level.WARNING, "ChangedByMaintainer")


def staff_role(*, is_superuser: bool) -> str:
    return "an administrator" if is_superuser else "a maintainer"


def changed_by_staff(*, subject: str, action: str, actor: str, is_superuser: bool, takes_time: bool) -> Event:
    """E.g. "Reservation #12 was cancelled by a maintainer (alice)"."""
    role = staff_role(is_superuser=is_superuser)
    return Event(CHANGED_BY_STAFF if takes_time else INFO, f"{subject} {action} by {role} ({actor})")
