"""A user's Work folder from the browser, without a booking: list a folder, open a file to
download, save an upload, stream a job's outputs as a zip.

The student is root in her container and controls every name under her Work folder, so
no path is trusted: the path asked for is split into names (no `..`, no `.`, no empty
name, no NUL), and every step, from the host's work root on, is taken from an open folder
descriptor with `O_NOFOLLOW` (as `containers/volumes.py` does). A link is listed as a
link and never followed, a FIFO or device is listed and never opened, a file is streamed
in chunks, never read whole. Only `work_root/<the signed-in user>` is reachable: the user
comes from the session, never from the request.

The web process reads the folder directly, so this works only where the Work root is on
the portal's own machine: a one-server lab (the host is not served by an agent of its
own), or a lab whose work roots are one shared storage mounted at the same path on the
portal's machine (`FILES_SHARED_WORK_ROOT`). Elsewhere `work_reachable` is False and the
page says on which server the folder lives.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from django.conf import settings
from django.utils.translation import gettext as _

from containers.models import Host
from containers.volumes import SAFE_FOLDER_NAME

MAX_LISTED = 2000  # a folder with more entries is listed in part, and says so
MAX_NAME_BYTES = 255
CHUNK = 1024 * 1024

_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class FileProblem(Exception):
    """What was asked cannot be given; the message is for the user and names no host path."""


class NotFound(FileProblem):
    """No such file or folder the user may reach (a link, a FIFO, `..`: the same answer)."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "folder", "file", "link", "other"
    size: int
    modified: datetime

    @property
    def is_folder(self) -> bool:
        return self.kind == "folder"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


@dataclass(frozen=True)
class Listing:
    path: str  # as asked, normalised: "" for the Work folder itself
    entries: list[Entry]
    truncated: bool


def work_reachable(host: Host) -> bool:
    """Whether this process can read the host's Work root (see the module's docstring)."""
    return not host.served_by_agent or settings.FILES_SHARED_WORK_ROOT


def path_names(path: str) -> list[str]:
    """A path relative to the Work folder as its names; anything that could leave the
    folder or name it ambiguously is refused (NotFound, like a missing file)."""
    if "\x00" in (path or ""):
        raise NotFound(_("No such file or folder."))
    names = [name for name in (path or "").split("/") if name]
    if (path or "").startswith("/") or any(name in (".", "..") for name in names):
        raise NotFound(_("No such file or folder."))
    return names


def upload_name(name: str) -> str:
    """A file name for an upload: one name, not a path; a clear error otherwise."""
    name = (name or "").strip()
    if not name or name in (".", "..") or "/" in name or "\x00" in name or "\\" in name:
        raise FileProblem(_("“%(name)s” is not a file name: use a name without / or \\.") % {"name": name})
    if len(name.encode()) > MAX_NAME_BYTES:
        raise FileProblem(_("The file name is longer than %(limit)d bytes.") % {"limit": MAX_NAME_BYTES})
    return name


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


@contextlib.contextmanager
def _opened_folder(host: Host, username: str, names: list[str]) -> Iterator[int]:
    """The folder `work_root/<username>/<names...>` as an open descriptor, every step
    without following a link; NotFound for anything that is not a real folder."""
    if not SAFE_FOLDER_NAME.fullmatch(username):
        raise NotFound(_("No such file or folder."))
    try:
        root = os.open(os.path.realpath(host.work_root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise NotFound(_("Your Work folder has not been made yet.")) from None
    current = root
    try:
        for name in [username, *names]:
            try:
                step = os.open(name, _OPEN_FOLDER, dir_fd=current)
            except PermissionError:
                raise FileProblem(
                    _("The portal may not read this folder; ask a maintainer (docs/containers.md, Files).")
                ) from None
            except OSError:
                raise NotFound(_("No such file or folder.")) from None
            os.close(current)
            current = step
        yield current
    finally:
        os.close(current)


def list_folder(*, host: Host, username: str, path: str) -> Listing:
    """The entries of a folder in the user's Work folder, folders first, then by name.
    Links and special files are listed as what they are, never followed or opened."""
    names = path_names(path)
    entries, truncated = [], False
    with _opened_folder(host, username, names) as folder, os.scandir(folder) as scanned:
        for entry in scanned:
            if len(entries) >= MAX_LISTED:
                truncated = True
                break
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            entries.append(
                Entry(
                    name=entry.name,
                    kind=_kind(info.st_mode),
                    size=info.st_size if stat.S_ISREG(info.st_mode) else 0,
                    modified=datetime.fromtimestamp(info.st_mtime, tz=UTC),
                )
            )
    entries.sort(key=lambda entry: (not entry.is_folder, entry.name.lower(), entry.name))
    return Listing(path="/".join(names), entries=entries, truncated=truncated)


def open_file(*, host: Host, username: str, path: str) -> tuple[BinaryIO, int, str]:
    """A plain file of the user's Work folder opened for reading (the caller streams and
    closes it), its size and name. A link, FIFO, device or folder is NotFound: it is
    checked before it is opened (lstat) and again after (fstat)."""
    *parents, name = path_names(path) or [""]
    if not name:
        raise NotFound(_("No such file or folder."))
    with _opened_folder(host, username, parents) as folder:
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
                raise NotFound(_("No such file or folder."))
            fd = os.open(name, _OPEN_FILE, dir_fd=folder)
        except OSError:
            raise NotFound(_("No such file or folder.")) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotFound(_("No such file or folder."))
    return os.fdopen(fd, "rb"), info.st_size, name


def upload_limit_bytes() -> int:
    return settings.FILES_UPLOAD_MAX_MB * 1024 * 1024


def save_upload(*, host: Host, username: str, path: str, name: str, chunks: Iterable[bytes]) -> str:
    """Writes an uploaded file into a folder of the user's Work folder under a new name:
    into a temporary file made there (`O_EXCL | O_NOFOLLOW`), then renamed into place
    within the same open folder. An existing name is refused, not overwritten; past the
    upload limit nothing is kept. Returns the path of the new file."""
    name = upload_name(name)
    limit = upload_limit_bytes()
    names = path_names(path)
    with _opened_folder(host, username, names) as folder:
        with contextlib.suppress(FileNotFoundError):
            os.stat(name, dir_fd=folder, follow_symlinks=False)
            raise FileProblem(
                _("“%(name)s” exists already; rename it or upload under another name.") % {"name": name}
            )
        temporary = f".upload-{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o644, dir_fd=folder)
        except OSError as error:
            raise FileProblem(
                _("The file cannot be written there (%(error)s).") % {"error": error.strerror}
            ) from None
        try:
            written = 0
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    written += len(chunk)
                    if written > limit:
                        raise FileProblem(
                            _("The file is larger than the upload limit of %(limit)d MiB.")
                            % {"limit": settings.FILES_UPLOAD_MAX_MB}
                        )
                    handle.write(chunk)
            if _exists(folder, name):
                raise FileProblem(
                    _("“%(name)s” exists already; rename it or upload under another name.") % {"name": name}
                )
            os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise
    return "/".join([*names, name])


def _exists(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


class _Pipe:
    """A write-only, unseekable sink for zipfile whose bytes are taken out in pieces."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.pieces.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.pieces = b"".join(self.pieces), []
        return data


def _walk(folder: int, prefix: str) -> Iterator[tuple[str, int]]:
    """(relative name, open descriptor) of every plain file under an open folder, never
    through a link; the caller closes each descriptor."""
    with os.scandir(folder) as scanned:
        names = sorted(entry.name for entry in scanned)
    for name in names:
        try:
            mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                sub = os.open(name, _OPEN_FOLDER, dir_fd=folder)
                try:
                    yield from _walk(sub, f"{prefix}{name}/")
                finally:
                    os.close(sub)
            elif stat.S_ISREG(mode):
                fd = os.open(name, _OPEN_FILE, dir_fd=folder)
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    yield f"{prefix}{name}", fd
                else:
                    os.close(fd)
        except OSError:
            continue  # removed or swapped meanwhile: left out


def zip_folder(*, host: Host, username: str, path: str) -> Iterator[bytes]:
    """A zip of every plain file under a folder of the user's Work folder, made while it
    is sent (nothing is kept in memory but one chunk). Links and special files are left
    out. NotFound before the first byte when the folder is not there."""
    names = path_names(path)
    with _opened_folder(host, username, names):
        pass  # there now; opened again when the stream starts

    def stream() -> Iterator[bytes]:
        with _opened_folder(host, username, names) as folder:
            pipe = _Pipe()
            with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
                for name, fd in _walk(folder, ""):
                    with os.fdopen(fd, "rb") as source, archive.open(name, "w", force_zip64=True) as target:
                        while chunk := source.read(CHUNK):
                            target.write(chunk)
                            yield pipe.take()
                    yield pipe.take()
            yield pipe.take()

    return stream()


def job_output_path(job_id: int) -> str:
    """A job's outputs: the folder its container sees as $JOB_OUTPUT (/root/Work/jobs/<id>)."""
    return f"jobs/{int(job_id)}"
