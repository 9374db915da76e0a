"""The space audit: how much a user keeps in their work and backup folders and their
persistent home on a host, each against its own quota. Its verdict
(`selectors.space_verdicts`) decides whether the lifecycle may launch their container."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.utils import timezone

from accounts.models import User
from accounts.selectors import capability_for
from aivc_portal.scheduler import queue_task
from aivc_portal.task_names import RECONCILE_TASK, USER_AUDIT_TASK
from containers import events, selectors, services
from containers.models import Host
from containers.volumes import home_folder

SPACE_AUDIT_AHEAD = timedelta(hours=1)
GIB = 1024**3


@dataclass(frozen=True)
class FolderSize:
    bytes: int
    complete: bool
    unreadable: Path | None = None  # the first path the audit could not read


def folder_size(path: Path, *, deadline: float) -> FolderSize:
    """Disk use of a folder tree (like du), symlinks not followed, hard links counted once.
    Past `deadline` (time.monotonic) it stops and says the size is incomplete. A folder or
    file it cannot read stops it too, naming the path: what a student locked away (a
    `chmod 000` folder, one owned by another uid) is never left out of the count."""
    total, seen = 0, set()
    pending = [path]
    while pending:
        if time.monotonic() > deadline:
            return FolderSize(total, complete=False)
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue  # not made yet, or removed while measuring
        except OSError:
            return FolderSize(total, complete=False, unreadable=folder)
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError:
                return FolderSize(total, complete=False, unreadable=Path(entry.path))
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return FolderSize(total, complete=True)


def _shown_path(path: Path, *, folders: dict[str, Path]) -> str:
    """The path as the user sees it from their container (Work/..., Backup/...), so no
    host path is shown."""
    for label, folder in folders.items():
        if path == folder or folder in path.parents:
            return str(Path(label) / path.relative_to(folder))
    return path.name


def audit_user_space(*, user_id: int, host: Host, now: datetime, timeout_s: float) -> bool:
    """Measures one user's work and backup folders and home on a host and records the result.
    A timed-out measurement is over quota only if what it counted already is; otherwise
    it is unknown and does not lift a block. Returns whether the user is over quota."""
    user = User.objects.get(pk=user_id)
    capability = capability_for(user=user, host=host)
    deadline = time.monotonic() + timeout_s
    folders = {
        "Work": Path(host.work_root) / user.username,
        "Backup": Path(host.backup_root) / user.username,
        "~": home_folder(host, user.username),  # the home as the student sees it: /root
    }
    work = folder_size(folders["Work"], deadline=deadline)
    backup = folder_size(folders["Backup"], deadline=deadline)
    home = folder_size(folders["~"], deadline=deadline)
    work_gb, backup_gb, home_gb = work.bytes / GIB, backup.bytes / GIB, home.bytes / GIB
    unreadable_path = work.unreadable or backup.unreadable or home.unreadable
    unreadable = _shown_path(unreadable_path, folders=folders) if unreadable_path else ""
    # What cannot be read cannot be shown to be small: it counts as over quota.
    over = (
        bool(unreadable)
        or work_gb > capability.work_space_gb
        or backup_gb > capability.backup_space_gb
        or home_gb > capability.home_space_gb
    )
    complete = work.complete and backup.complete and home.complete
    services.space_audit_record(
        user_id=user_id,
        host=host,
        work_gb=work_gb,
        backup_gb=backup_gb,
        home_gb=home_gb,
        complete=complete,
        over_quota=over,
        unreadable=unreadable,
        now=now,
    )
    if unreadable:
        event = events.audit_unreadable(username=user.username, host_name=host.name, path=unreadable)
        services.event_record(event=event, user=user, host=host, now=now)
    elif over:
        event = events.over_quota(
            username=user.username,
            work_gb=work_gb,
            work_quota=capability.work_space_gb,
            backup_gb=backup_gb,
            backup_quota=capability.backup_space_gb,
            home_gb=home_gb,
            home_quota=capability.home_space_gb,
        )
        services.event_record(event=event, user=user, host=host, now=now)
    elif not complete:
        event = events.audit_timed_out(username=user.username, host_name=host.name, timeout_s=timeout_s)
        services.event_record(event=event, user=user, host=host, now=now)
    elif selectors.blocked_reservations(user_id=user_id, host=host).exists():
        services.event_record(
            event=events.back_under_quota(username=user.username), user=user, host=host, now=now
        )
        queue_task(RECONCILE_TASK)
    return over


def queue_audits(*, host_id: int | None = None) -> int:
    """Queues one audit per user with a reservation running now or starting within the
    hour: each gets the whole SPACE_AUDIT_TIMEOUT, inside django-q's task timeout.
    Returns how many it queued."""
    queued = 0
    for host in selectors.hosts_to_reconcile(host_id=host_id):
        now = timezone.now()
        for user_id in selectors.users_to_audit(host=host, now=now, until=now + SPACE_AUDIT_AHEAD):
            queue_task(USER_AUDIT_TASK, user_id=user_id, host_id=host.pk)
            queued += 1
    return queued
