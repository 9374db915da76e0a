"""The catalogue of monitor-log events: every sign with its level, and the builders of the
lifecycle's messages. The lifecycle, the space audit and telemetry name an event from here
and hand it to `services.event_record`, so a sign's level and wording live in one place."""

from __future__ import annotations

from dataclasses import dataclass

from containers.models import ContainerEvent

Level = ContainerEvent.Level


@dataclass(frozen=True)
class Kind:
    """What kind of line an event is: its level and sign (INFO lines carry no sign)."""

    level: str
    sign: str = ""


@dataclass(frozen=True)
class Event:
    kind: Kind
    message: str


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
    return Event(
        ENGINE_UNAVAILABLE,
        f"The container engine of {host_name} does not answer ({error}); the next tick tries again",
    )


def reconcile_error(*, host_name: str, error: Exception) -> Event:
    return Event(
        RECONCILE_ERROR, f"Reconciling {host_name} stopped half way ({error}); the next tick tries again"
    )


def host_tick_crashed(*, host_name: str, error: Exception) -> Event:
    return Event(
        UNEXPECTED_ERROR,
        f"Reconciling {host_name} stopped on an unexpected {type(error).__name__} ({error}); "
        "the other hosts went on and the next tick tries again",
    )


def host_step_crashed(*, host_name: str, error: Exception) -> Event:
    return Event(
        UNEXPECTED_ERROR,
        f"A step of reconciling {host_name} stopped on an unexpected {type(error).__name__} ({error}); "
        "the rest of the tick went on and the next tick tries again",
    )


def never_started(*, username: str, reservation_id: int, reason: str) -> Event:
    return Event(NEVER_STARTED, f"{username}'s reservation #{reservation_id} ended unlaunched ({reason})")


def orphan_removed(*, container_name: str) -> Event:
    return Event(ORPHAN_CONTAINER, f"Removed container {container_name}, which no reservation owns")


def container_removed(*, username: str, container_name: str, reservation_id: int, status: str) -> Event:
    return Event(
        INFO,
        f"{username}'s container {container_name} was stopped and removed "
        f"(reservation #{reservation_id} {status})",
    )


def recreated_on_request(*, username: str) -> Event:
    return Event(INFO, f"{username}'s container is recreated at a maintainer's request")


def died_for_good(*, username: str, what: str, limit: int) -> Event:
    return Event(
        CONTAINER_DIED_FOR_GOOD, f"{username}'s container {what}; {limit} restarts used, reservation failed"
    )


def died_restarting(*, username: str, what: str, count: int, limit: int) -> Event:
    return Event(
        CONTAINER_DIED_RESTARTING,
        f"{username}'s container {what} during the reservation; restarting it ({count} of {limit})",
    )


def launch_blocked_by_space(*, username: str, blocked: str) -> Event:
    return Event(SPACE_WARNING, f"{username} is over quota, container not started. {blocked}")


def launch_failed(*, kind: Kind, username: str, message: str) -> Event:
    return Event(kind, f"{username}'s container did not start: {message}")


def launch_retrying(*, kind: Kind, username: str, cause: str, count: int, limit: int) -> Event:
    return Event(
        kind, f"{username}'s container did not start ({cause}); trying again next tick ({count} of {limit})"
    )


def started(
    *, username: str, container_name: str, cpus: str, memory_gb: int, gpus: str, ssh_port: int
) -> Event:
    return Event(
        INFO,
        f"{username}'s container {container_name} started "
        f"(CPUs {cpus}, memory {memory_gb} GiB, GPUs {gpus}, port {ssh_port})",
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
    home = f", and home_dir {home_gb:.1f}GB of {home_quota}GB" if home_quota is not None else ""
    return Event(
        SPACE_WARNING,
        f"{username} is over-use the work_dir {work_gb:.1f}GB of {work_quota}GB, "
        f"and backup_dir {backup_gb:.1f}GB of {backup_quota}GB{home}",
    )


def audit_timed_out(*, username: str, host_name: str, timeout_s: float) -> Event:
    return Event(
        SPACE_AUDIT_TIMEOUT,
        f"The size of {username}'s folders on {host_name} is unknown: "
        f"measuring took longer than {timeout_s:g} s",
    )


def audit_unreadable(*, username: str, host_name: str, path: str) -> Event:
    return Event(
        SPACE_AUDIT_UNREADABLE,
        f"The space audit cannot read {username}'s {path} on {host_name}; "
        "it counts as over quota until it can",
    )


def back_under_quota(*, username: str) -> Event:
    return Event(INFO, f"{username} is back under quota; the blocked reservation launches")


# Batch jobs --------------------------------------------------------------------------------
# Every finished job leaves one JobFinished line (notifications look for the sign); a job
# that did not succeed is a warning.

JOB_FINISHED = Kind(Level.INFO, "JobFinished")
JOB_FINISHED_BADLY = Kind(Level.WARNING, "JobFinished")


def job_started(*, username: str, job_id: int, container_name: str, gpus: str) -> Event:
    return Event(INFO, f"{username}'s job #{job_id} started in {container_name} (GPUs {gpus})")


def job_finished(
    *, username: str, job_id: int, status: str, exit_code: int | None, detail: str = ""
) -> Event:
    code = "no exit code" if exit_code is None else f"exit code {exit_code}"
    kind = JOB_FINISHED if status in ("succeeded", "cancelled") else JOB_FINISHED_BADLY
    suffix = f": {detail}" if detail else ""
    return Event(kind, f"{username}'s job #{job_id} {status.replace('_', ' ')} ({code}){suffix}")


JOB_LOG_UNSAVED = Kind(Level.ERROR, "JobLogUnsaved")


def job_log_unsaved(*, username: str, job_id: int, error: OSError) -> Event:
    return Event(JOB_LOG_UNSAVED, f"{username}'s job #{job_id}: its output could not be saved ({error})")


def job_image_built(*, username: str, job_id: int, tag: str) -> Event:
    return Event(INFO, f"{username}'s job #{job_id}: image {tag} built from the upload")


def job_build_failed(*, username: str, job_id: int, cause: str) -> Event:
    return Event(
        JOB_BUILD_FAILED, f"{username}'s job #{job_id} failed: its image could not be built ({cause})"
    )


# Messages of the image check ahead of a start ----------------------------------------------


def image_pulled(*, reference: str, host_name: str) -> Event:
    return Event(INFO, f"Pulled the image {reference} on {host_name} ahead of a reservation's start")


def image_pull_failed(*, reference: str, host_name: str, error: Exception) -> Event:
    return Event(
        IMAGE_PULL_FAILED,
        f"The image {reference} is not on {host_name} and pulling it failed ({error}); "
        "build or pull it there, or deactivate the image",
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
