"""Host folders a container mounts: the user's work and backup folders, the shared dataset,
the SSH keys file the portal writes, and the SSH host keys and dotfiles that persist in
the backup folder. The portal runs on the GPU server, so these are local paths.

Users are root inside their containers and control everything under their own folders,
so no path under them is trusted: a symlink there could make the engine mount any host
file. Every source is checked to resolve to itself before it is mounted."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from containers.runtime import Mount

if TYPE_CHECKING:
    from accounts.models import User
    from bookings.models import Reservation

# Folder names come from usernames; only plain names are used as path components.
SAFE_FOLDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.@+-]*")
PORTAL_DIR = ".aivc-portal"  # under backup_root, not writable from any container
PERSISTED_DIR = ".aivc"  # under the user's backup folder
HOST_KEY_TYPES = ("ed25519", "ecdsa")
HOME_DIRECTORIES = (".config", ".local", ".vscode-server")
HOME_FILES = (".bash_history", ".zsh_history", ".gitconfig")


class FolderProblem(Exception):
    """A folder could not be prepared safely; the message says which and why."""


def _user_folder(root: str, username: str) -> Path:
    if not SAFE_FOLDER_NAME.fullmatch(username) or ".." in username:
        raise FolderProblem(f"The account id {username!r} cannot be used as a folder name.")
    return Path(root) / username


def _ensure_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return _checked(path)


def _ensure_file(path: Path, content: str | None = None, mode: int = 0o644) -> Path:
    _checked(path.parent)
    if content is not None:
        temporary = path.with_name(f".{path.name}.new")
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
        os.replace(temporary, path)
    elif not path.exists() and not path.is_symlink():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode))
    return _checked(path)


def _checked(path: Path) -> Path:
    """The path, if no component of it is a symlink (it resolves to itself)."""
    absolute = Path(os.path.abspath(path))
    if Path(os.path.realpath(absolute)) != absolute:
        raise FolderProblem(f"{absolute} is or passes through a symbolic link; it is not mounted.")
    return absolute


def authorized_keys_text(user: User) -> str:
    keys = [line.strip() for line in (user.ssh_public_keys or "").splitlines()]
    return "".join(f"{key}\n" for key in keys if key and not key.startswith("#"))


def _host_keys(folder: Path) -> list[Mount]:
    """SSH host keys kept per user, so a new reservation's container answers with the same
    keys and ssh does not warn that the remote host identification changed."""
    mounts = []
    for key_type in HOST_KEY_TYPES:
        private = folder / f"ssh_host_{key_type}_key"
        if not private.exists() and not private.is_symlink():
            try:
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "", "-f", str(private)],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            except (OSError, subprocess.SubprocessError) as error:
                raise FolderProblem(f"Could not make an SSH host key ({error}).") from None
        for source in (private, private.with_name(f"{private.name}.pub")):
            mounts.append(Mount(str(_checked(source)), f"/etc/ssh/{source.name}", read_only=True))
    return mounts


def prepare_mounts(reservation: Reservation) -> list[Mount]:
    """Creates what is missing and returns the container's mounts."""
    host, user = reservation.host, reservation.user
    work = _ensure_dir(_user_folder(host.work_root, user.username))
    backup = _ensure_dir(_user_folder(host.backup_root, user.username))
    dataset = _ensure_dir(Path(host.dataset_root))
    portal = _ensure_dir(_user_folder(str(Path(host.backup_root) / PORTAL_DIR), user.username), mode=0o700)
    keys = _ensure_file(portal / "authorized_keys", authorized_keys_text(user))
    persisted = _ensure_dir(backup / PERSISTED_DIR)
    host_keys = _ensure_dir(persisted / "ssh_host_keys", mode=0o700)
    home = _ensure_dir(persisted / "home")

    mounts = [
        Mount(str(work), "/root/Work"),
        Mount(str(backup), "/root/Backup"),
        Mount(str(dataset), "/root/Dataset", read_only=True),
        Mount(str(keys), "/root/.ssh/authorized_keys", read_only=True),
        *_host_keys(host_keys),
    ]
    for name in HOME_DIRECTORIES:
        mounts.append(Mount(str(_ensure_dir(home / name)), f"/root/{name}"))
    for name in HOME_FILES:
        mounts.append(Mount(str(_ensure_file(home / name, mode=0o600)), f"/root/{name}"))
    return mounts


def _mkdir_no_follow(parent: Path, names: tuple[str, ...]) -> Path:
    """Creates parent/names[0]/names[1]/... one level at a time through directory file
    descriptors opened with O_NOFOLLOW, so a symlink the user planted anywhere on the way
    is refused instead of followed (mkdir -p would follow it and create folders elsewhere)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    descriptor = os.open(_checked(parent), flags)
    try:
        for name in names:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode=0o755, dir_fd=descriptor)
            try:
                child = os.open(name, flags, dir_fd=descriptor)
            except OSError:
                raise FolderProblem(
                    f"{parent}/{'/'.join(names)} is not a plain folder; it is not used."
                ) from None
            os.close(descriptor)
            descriptor = child
    finally:
        os.close(descriptor)
    return _checked(parent.joinpath(*names))


def prepare_job_mounts(reservation: Reservation, *, job_id: int) -> list[Mount]:
    """A batch job's mounts: the user's work folder, where its outputs go (jobs/<id>), and
    the shared datasets read-only. No SSH keys, no home dotfiles: nobody logs in."""
    host, user = reservation.host, reservation.user
    work = _ensure_dir(_user_folder(host.work_root, user.username))
    dataset = _ensure_dir(Path(host.dataset_root))
    _mkdir_no_follow(work, ("jobs", str(int(job_id))))
    return [Mount(str(work), "/root/Work"), Mount(str(dataset), "/root/Dataset", read_only=True)]
