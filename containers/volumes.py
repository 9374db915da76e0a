"""Host folders a container mounts: the user's persistent home (mounted at /root), their
work and backup folders inside it, the shared dataset, and the SSH keys file and host keys
the portal writes. The portal runs on the GPU server, so these are local paths.

Users are root inside their containers and control everything under their own folders, so
no name under them is trusted: any of them may be a symbolic link to another user's file,
a plain file where a folder belongs, or a FIFO that would block a reader. So:

- inside a user's folder every step is taken from an open folder descriptor with
  `O_NOFOLLOW` (openat-style), and the kind of each thing is checked before it is used;
  the portal only ever creates empty folders and empty files there, never writes content;
- what the portal writes (authorized_keys, SSH host keys) lives in the portal's own state
  folder (`CONTAINER_STATE_ROOT`, 0700), which no container mounts except these files,
  read-only; host keys are made in a temporary folder there and installed by one rename.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from accounts.sshkeys import OTHER_LINE_BREAKS
from accounts.validators import ACCOUNT_ID_PATTERN
from containers.lab import lab_token
from containers.specs import Mount, cpu_count

if TYPE_CHECKING:
    from accounts.models import User
    from bookings.models import Reservation
    from containers.models import Host

# Folder names come from account ids; only ids the account validator accepts are used.
SAFE_FOLDER_NAME = re.compile(ACCOUNT_ID_PATTERN)
PORTAL_DIR = ".aivc-portal"  # the state folder of older versions, beside the users' backup folders
HOMES_DIR = ".aivc-home"  # the default root of the persistent homes, beside the users' backup folders
PERSISTED_DIR = ".aivc"  # under the user's backup folder: where an older portal kept dotfiles
HOST_KEYS_DIR = "ssh_host_keys"
HOST_KEY_TYPES = ("ed25519", "ecdsa")
# What the older portal mounted one by one from Backup/<user>/.aivc/home; moved into the
# persistent home the first time it is missing there.
OLD_HOME_ENTRIES = (".config", ".local", ".vscode-server", ".bash_history", ".zsh_history", ".gitconfig")
# Mount points inside the home: made by the portal as real folders (a student's symlink
# there is refused), so the engine never has to create them through the student's files.
HOME_MOUNT_POINTS = ("Work", "Backup", "Dataset")
JOB_HOME_MOUNT_POINTS = ("Work", "Dataset")
CPU_ONLINE_DIR = "cpus-online"
# A private host key is a few hundred bytes; anything larger in a user's folder is not one.
MAX_LEGACY_KEY_BYTES = 16 * 1024
KEYGEN_TIMEOUT_S = 30

_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Never blocks on a FIFO, never makes a terminal ours, never follows a final symlink.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class FolderProblem(Exception):
    """A folder could not be prepared safely; the message says which and why."""


@dataclass(frozen=True)
class _Folder:
    """A folder opened without following symbolic links, with the path it was reached by."""

    fd: int
    path: Path


def _not_usable(path: Path) -> FolderProblem:
    return FolderProblem(
        f"{path} is a symbolic link or not what the portal expects there (a folder or a plain "
        "file); it is not used. Remove or rename it, then ask for a restart."
    )


def _open_root(path: Path, *, mode: int) -> _Folder:
    """A maintainer-configured root (trusted): created if missing and opened."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    real = Path(os.path.realpath(path))
    return _Folder(os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), real)


def _subfolder(parent: _Folder, name: str, *, mode: int = 0o755, create: bool = True) -> _Folder:
    """`parent/name` as a real folder (made if missing), never through a symbolic link."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent.fd)
    try:
        fd = os.open(name, _OPEN_FOLDER, dir_fd=parent.fd)
    except OSError:
        raise _not_usable(parent.path / name) from None
    return _Folder(fd, parent.path / name)


def _empty_file(parent: _Folder, name: str, *, mode: int) -> Path:
    """`parent/name` as a plain file, created empty if missing; its content is never
    touched. A symlink, FIFO, device or folder there is refused without being opened
    (lstat first) and the opened file is checked again (fstat), so a swap in between
    is caught too."""
    path = parent.path / name
    try:
        existing = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise _not_usable(path)
    try:
        fd = os.open(name, _OPEN_FILE | os.O_CREAT, mode, dir_fd=parent.fd)
    except OSError:
        raise _not_usable(path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_usable(path)
    finally:
        os.close(fd)
    return path


def _read_small_file(parent: _Folder, name: str, *, limit: int) -> bytes | None:
    """The content of `parent/name` if it is a plain file of at most `limit` bytes;
    None for anything else (missing, a link, a FIFO, too large)."""
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=parent.fd, follow_symlinks=False).st_mode):
            return None
        fd = os.open(name, _OPEN_FILE, dir_fd=parent.fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        content = handle.read(limit + 1)
    return content if len(content) <= limit else None


def _write_new_file(folder: Path, name: str, content: bytes, *, mode: int, root_owned: bool = False) -> None:
    """Writes a file in a portal-owned folder by a temporary name and one rename."""
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(content)
            if root_owned:
                _hand_to_root(handle.fileno(), name)
        os.replace(temporary, folder / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _hand_to_root(fd: int, name: str) -> None:
    """sshd (StrictModes) refuses an authorized_keys file owned by anyone but root or the
    user, and the user is root inside the container: a scheduler running as the service's
    user (deploy/systemd, with CAP_CHOWN) gives the file to root."""
    if os.geteuid() == 0:
        return
    try:
        os.fchown(fd, 0, 0)
    except PermissionError:
        raise FolderProblem(
            f"Could not give {name} to root, which sshd requires: the scheduler needs CAP_CHOWN "
            "(deploy/systemd/aivc-scheduler.service) or must run as root."
        ) from None


def _user_folder_name(username: str) -> str:
    if not SAFE_FOLDER_NAME.fullmatch(username):
        raise FolderProblem(f"The account id {username!r} cannot be used as a folder name.")
    return username


def state_root(host: Host) -> Path:
    """The portal's own folder on this host (`CONTAINER_STATE_ROOT`, mounted by no container,
    on a filesystem of its own: `_check_state_apart`)."""
    return Path(settings.CONTAINER_STATE_ROOT)


def _check_state_apart(host: Host, state: Path) -> None:
    """Refuses a state folder on the filesystem of a folder students write to: one student
    who fills it would make every other student's launch fail (authorized_keys and host
    keys could no longer be written)."""
    if settings.CONTAINER_STATE_SHARED_FS_OK:
        return
    device = os.stat(state).st_dev
    for what, root in (("work", host.work_root), ("backup", host.backup_root), ("home", home_root(host))):
        try:
            shared = os.stat(root).st_dev == device
        except OSError:
            continue  # made at the launch; an unreachable root fails there
        if shared:
            raise FolderProblem(
                f"The portal's state folder {state} is on the same filesystem as the {what} root "
                f"{root}, which students can fill; set CONTAINER_STATE_ROOT to a folder on another "
                "filesystem (docs/security.md)."
            )


def _previous_state_keys(host: Host, username: str) -> _Folder | None:
    """`<backup_root>/.aivc-portal/<user>/ssh_host_keys`, where host keys were kept before the
    state folder left the Backup filesystem: adopted, so users keep the identity they trust."""
    path = Path(host.backup_root) / PORTAL_DIR / username / HOST_KEYS_DIR
    try:
        return _Folder(os.open(path, _OPEN_FOLDER), path)
    except OSError:
        return None


def authorized_keys_text(user: User) -> str:
    """One key per line, split on new lines only; a line holding another line break (saved
    before keys were checked for them) is left out rather than trusted."""
    keys = [line.strip() for line in (user.ssh_public_keys or "").split("\n")]
    return "".join(
        f"{key}\n" for key in keys if key and not key.startswith("#") and not OTHER_LINE_BREAKS.search(key)
    )


def _keygen(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh-keygen", *arguments],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=KEYGEN_TIMEOUT_S,
    )


def _adopt_legacy_key(legacy: _Folder | None, folder: Path, name: str) -> bool:
    """Copies a private host key the old portal kept in the user's backup folder into the
    portal's temporary folder, if it is a plain, small, unencrypted key; its public half is
    derived from the copy, never read from the user's folder."""
    content = _read_small_file(legacy, name, limit=MAX_LEGACY_KEY_BYTES) if legacy else None
    if not content:
        return False
    _write_new_file(folder, name, content, mode=0o600)
    try:
        public = _keygen(["-y", "-P", "", "-f", str(folder / name)]).stdout
    except (OSError, subprocess.SubprocessError):
        os.unlink(folder / name)
        return False
    _write_new_file(folder, f"{name}.pub", public, mode=0o644)
    return True


def _legacy_host_keys(backup: _Folder) -> _Folder | None:
    """`Backup/<user>/.aivc/ssh_host_keys`, where the old portal kept host keys, opened
    read-only without following links; None when it is not a plain folder."""
    with contextlib.ExitStack() as stack:
        try:
            persisted = _subfolder(backup, PERSISTED_DIR, create=False)
        except FolderProblem:
            return None
        stack.callback(os.close, persisted.fd)
        try:
            return _subfolder(persisted, HOST_KEYS_DIR, create=False)
        except FolderProblem:
            return None


def _host_keys_complete(folder: Path) -> bool:
    names = [f"ssh_host_{key_type}_key" for key_type in HOST_KEY_TYPES]
    return all((folder / name).is_file() and (folder / f"{name}.pub").is_file() for name in names)


def _ensure_host_keys(state: Path, backup: _Folder, *, previous: _Folder | None = None) -> Path:
    """The user's SSH host keys in the state folder, so every container of theirs answers
    with the same identity. Made once: keys from the old location are adopted, missing
    ones generated, all in a temporary folder that one rename installs, so a crash or a
    second agent never leaves half a pair."""
    installed = state / HOST_KEYS_DIR
    if _host_keys_complete(installed):
        return installed
    building = Path(tempfile.mkdtemp(dir=state, prefix=".host-keys-"))
    legacy = previous or _legacy_host_keys(backup)
    try:
        for key_type in HOST_KEY_TYPES:
            name = f"ssh_host_{key_type}_key"
            if not _adopt_legacy_key(legacy, building, name):
                _keygen(["-q", "-t", key_type, "-N", "", "-C", "", "-f", str(building / name)])
        if installed.exists():  # incomplete (an older key set): replaced whole
            shutil.rmtree(installed)
        os.rename(building, installed)
    except (OSError, subprocess.SubprocessError) as error:
        if _host_keys_complete(installed):
            return installed  # another agent installed them first
        raise FolderProblem(f"Could not make the SSH host keys ({error}).") from None
    finally:
        if legacy is not None:
            os.close(legacy.fd)
        shutil.rmtree(building, ignore_errors=True)
    return installed


def _host_keys_to_adopt(host: Host, state: Path, username: str) -> _Folder | None:
    if _host_keys_complete(state / HOST_KEYS_DIR):
        return None
    return _previous_state_keys(host, username)


def _ensure_state(host: Host, username: str) -> Path:
    """The user's folder in the portal's state folder (0700 all the way)."""
    folder = state_root(host) / username
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder.parent, 0o700)
    os.chmod(folder, 0o700)
    _check_state_apart(host, folder.parent)
    return folder


def home_root(host: Host) -> Path:
    """Where the persistent homes live (`CONTAINER_HOME_ROOT`; by default
    `<backup_root>/.aivc-home`, beside the users' backup folders, so on the storage a lab
    shares between servers, and inside no user's folder)."""
    return Path(settings.CONTAINER_HOME_ROOT or Path(host.backup_root) / HOMES_DIR)


def home_folder(host: Host, username: str) -> Path:
    """A user's persistent home on the host (what their containers see as /root)."""
    return home_root(host) / _user_folder_name(username)


def _adopt_old_home(backup: _Folder, home: _Folder) -> None:
    """Moves what an older portal kept in `Backup/<user>/.aivc/home` into the home, one
    entry at a time by a rename between open folders (never a copy, never through a link:
    a link is moved as a link and only ever resolved inside the container). An entry the
    home already has, or one on another file system, stays where it is."""
    with contextlib.ExitStack() as stack:
        try:
            persisted = _subfolder(backup, PERSISTED_DIR, create=False)
            stack.callback(os.close, persisted.fd)
            old = _subfolder(persisted, "home", create=False)
            stack.callback(os.close, old.fd)
        except FolderProblem:
            return
        for name in OLD_HOME_ENTRIES:
            try:
                os.stat(name, dir_fd=home.fd, follow_symlinks=False)
                continue
            except FileNotFoundError:
                pass
            with contextlib.suppress(OSError):
                os.rename(name, name, src_dir_fd=old.fd, dst_dir_fd=home.fd)


def _user_folder(root: Path, name: str) -> _Folder:
    """`root/<name>`, a user's folder: made if missing, opened without following links,
    0700 (also one an older version made 0755). The caller closes it."""
    parent = _open_root(root, mode=0o755)
    try:
        folder = _subfolder(parent, name, mode=0o700)
    finally:
        os.close(parent.fd)
    os.fchmod(folder.fd, 0o700)
    return folder


def _home_mount(home: _Folder, *, points: tuple[str, ...], opened) -> Mount:
    """The home's mount, with every mount point inside it made by the portal as a real
    folder: a student's link or file at `Work`, `Backup`, `Dataset` or `.ssh` is refused
    here, before the engine mounts anything onto it (docs/security.md)."""
    for point in points:
        opened(_subfolder(home, point))
    return Mount(str(home.path), "/root")


def _ssh_mount_point(home: _Folder, *, opened) -> None:
    """`/root/.ssh/authorized_keys` inside the home, a real folder and an empty plain file,
    so the engine mounts the portal's keys onto exactly that file."""
    ssh = opened(_subfolder(home, ".ssh", mode=0o700))
    # sshd refuses keys under a group- or world-writable ~/.ssh (or ~, which _user_folder
    # resets): a student's chmod there would lock her out of every later booking.
    os.fchmod(ssh.fd, 0o700)
    _empty_file(ssh, "authorized_keys", mode=0o600)


def cpus_online_mount(host: Host, *, cpu_count: int) -> Mount:
    """A file reading `0-<n-1>` over the container's /sys/devices/system/cpu/online, so
    `sysconf(_SC_NPROCESSORS_ONLN)` (Python's `os.cpu_count()`, `getconf`, OpenBLAS) counts
    the booked CPUs instead of the host's. Written once per count in the portal's state
    folder, read-only in the container."""
    folder = state_root(host) / CPU_ONLINE_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    name = str(int(cpu_count))
    if not (folder / name).is_file():
        content = "0\n" if cpu_count == 1 else f"0-{cpu_count - 1}\n"
        _write_new_file(folder, name, content.encode(), mode=0o644)
    return Mount(str(folder / name), "/sys/devices/system/cpu/online", read_only=True)


def prepare_mounts(reservation: Reservation) -> list[Mount]:
    """Creates what is missing and returns the container's mounts: the persistent home at
    /root, the work, backup and dataset folders inside it, the portal's SSH files."""
    host, user = reservation.host, reservation.user
    name = _user_folder_name(user.username)
    with contextlib.ExitStack() as stack:

        def opened(folder: _Folder) -> _Folder:
            stack.callback(os.close, folder.fd)
            return folder

        work = opened(_user_folder(Path(host.work_root), name))
        backup = opened(_user_folder(Path(host.backup_root), name))
        home = opened(_user_folder(home_root(host), name))
        _adopt_old_home(backup, home)
        dataset = Path(os.path.realpath(host.dataset_root))
        dataset.mkdir(parents=True, exist_ok=True)

        state = _ensure_state(host, name)
        _write_new_file(
            state, "authorized_keys", authorized_keys_text(user).encode(), mode=0o644, root_owned=True
        )
        host_keys = _ensure_host_keys(state, backup, previous=_host_keys_to_adopt(host, state, name))

        mounts = [_home_mount(home, points=HOME_MOUNT_POINTS, opened=opened)]
        _ssh_mount_point(home, opened=opened)
        mounts += [
            Mount(str(work.path), "/root/Work"),
            Mount(str(backup.path), "/root/Backup"),
            Mount(str(dataset), "/root/Dataset", read_only=True),
            Mount(str(state / "authorized_keys"), "/root/.ssh/authorized_keys", read_only=True),
        ]
        for key_type in HOST_KEY_TYPES:
            for key in (f"ssh_host_{key_type}_key", f"ssh_host_{key_type}_key.pub"):
                mounts.append(Mount(str(host_keys / key), f"/etc/ssh/{key}", read_only=True))
        return mounts + _cpu_mounts(reservation)


def _cpu_mounts(reservation: Reservation) -> list[Mount]:
    """The online-CPU file of the booking's size, where containers are pinned."""
    if not settings.CONTAINER_CPUSET:
        return []
    return [cpus_online_mount(reservation.host, cpu_count=cpu_count(reservation.cpus))]


# JupyterLab copies its token into every page it serves (and its pages then put it in
# WebSocket URLs); the proxy adds the token to each request instead, so the page gets none.
# Loaded beside the image's own configuration (JUPYTER_CONFIG_PATH, containers/specs.py).
LAB_JUPYTER_CONFIG = b"""# Written by the AIVC portal (containers/volumes.py); read-only in the container.
def _no_token_in_the_page(handler, page_config):
    page_config["token"] = ""
    return page_config


c.ServerApp.tornado_settings = {"page_config_hook": _no_token_in_the_page}
"""


def prepare_lab_token(reservation: Reservation) -> Path:
    """The folder holding the reservation's Jupyter token (and the portal's addition to
    JupyterLab's configuration), in the portal's state folder (0700 above it, so no other
    account on the host reads it); the container mounts the folder read-only and
    JupyterLab reads the file. Rewritten whole at each launch."""
    state = _ensure_state(reservation.host, _user_folder_name(reservation.user.username))
    folder = state / "jupyter"
    folder.mkdir(exist_ok=True)
    # Readable inside the container whatever its root may do; the 0700 parent fences it in.
    os.chmod(folder, 0o755)  # noqa: S103
    _write_new_file(folder, "token", f"{lab_token(reservation.pk)}\n".encode(), mode=0o644)
    _write_new_file(folder, "jupyter_server_config.py", LAB_JUPYTER_CONFIG, mode=0o644)
    return folder


def prepare_job_mounts(reservation: Reservation, *, job_id: int) -> list[Mount]:
    """A batch job's mounts: the persistent home at /root (its virtualenvs and dotfiles),
    the user's work folder inside it with the job's output folder jobs/<id> made inside
    (step by step from open folders, never through a symlink), and the shared datasets
    read-only. No SSH keys, no backup folder: nobody logs in."""
    host, user = reservation.host, reservation.user
    name = _user_folder_name(user.username)
    with contextlib.ExitStack() as stack:

        def opened(folder: _Folder) -> _Folder:
            stack.callback(os.close, folder.fd)
            return folder

        work = opened(_user_folder(Path(host.work_root), name))
        opened(_subfolder(opened(_subfolder(work, "jobs")), str(int(job_id))))
        home = opened(_user_folder(home_root(host), name))
        dataset = Path(os.path.realpath(host.dataset_root))
        dataset.mkdir(parents=True, exist_ok=True)
        return [
            _home_mount(home, points=JOB_HOME_MOUNT_POINTS, opened=opened),
            Mount(str(work.path), "/root/Work"),
            Mount(str(dataset), "/root/Dataset", read_only=True),
            *_cpu_mounts(reservation),
        ]
