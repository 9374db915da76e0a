"""DoPQ zip uploads, read and checked before anything is built: the zip's shape (size,
unpacked size, file count, no absolute paths, `..` or links), its `Dockerfile` and
`container_config.json` (at the root or in one subfolder), and the config's fields. What
passes becomes the build context as a tar stream, the only thing the host's engine sees.
Every refusal is a ValidationError naming what is wrong, for that upload only (DoPQ let one
bad zip stop the whole Provider)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import stat
import tarfile
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

CONFIG_NAME = "container_config.json"
DOCKERFILE_NAME = "Dockerfile"
CONFIG_FIELDS = {"name", "executor_name", "required_memory", "num_gpus", "build_flag", "run_params"}
# The run parameters a student may set: what the job runs. Everything else DoPQ merged into
# `docker run` (mounts, devices, privileges, networks, the host's namespaces) is the
# portal's to decide, so it is refused by name.
SAFE_RUN_PARAMS = {"command"}
DANGEROUS_RUN_PARAMS = {
    "privileged",
    "volumes",
    "mounts",
    "devices",
    "device_requests",
    "cap_add",
    "security_opt",
    "network",
    "network_mode",
    "pid_mode",
    "ipc_mode",
    "userns_mode",
    "uts_mode",
    "user",
    "ports",
    "runtime",
    "sysctls",
    "volumes_from",
    "extra_hosts",
    "mem_limit",
    "shm_size",
    "environment",
}
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,63}$")
MEMORY_PATTERN = re.compile(r"^(\d{1,6})\s*([gm]?)b?$", re.IGNORECASE)
DEFAULT_MEMORY = "20g"
# Below this many unpacked bytes the ratio is not checked: a small context cannot hurt.
RATIO_FREE_BYTES = 2**20


@dataclass(frozen=True)
class DopqUpload:
    """A checked upload: the config's fields, and the build context (an uncompressed tar)
    written to `context_file`, with its size and sha256."""

    name: str
    executor_name: str
    memory_gb: int
    gpu_count: int
    command: str
    dockerfile: str
    context_file: BinaryIO
    context_size: int
    digest: str


def refused(message: str, code: str) -> ValidationError:
    return ValidationError({"upload": message}, code=code)


def parse_upload(data: bytes, *, into: BinaryIO | None = None) -> DopqUpload:
    """The upload checked and its build context streamed into `into` (a file opened for
    writing; an in-memory buffer when none is given); ValidationError otherwise. Sizes and
    the compression ratio are read from the zip's directory before anything is unpacked,
    and each file is copied in chunks, so a zip bomb costs neither memory nor disk."""
    if len(data) > settings.JOB_UPLOAD_MAX_BYTES:
        raise refused(
            _("The zip is larger than %(most)s MB.") % {"most": settings.JOB_UPLOAD_MAX_BYTES // 2**20},
            "zip_too_large",
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise refused(_("The upload is not a readable zip file."), "not_a_zip") from None
    with archive:
        files = _checked_members(members, zip_size=len(data))
        root = _context_root(files)
        config = _read_config(archive, files[_joined(root, CONFIG_NAME)])
        dockerfile = _read_dockerfile(archive, files[_joined(root, DOCKERFILE_NAME)])
        into = into if into is not None else io.BytesIO()
        size, digest = _context_tar(archive, files, root, into=into)
    return DopqUpload(context_file=into, context_size=size, digest=digest, dockerfile=dockerfile, **config)


def unpacked_size(data: bytes) -> int:
    """What a zip says it unpacks to (0 if it is not a readable zip): for a quota check
    before anything is unpacked."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return 0


def _read_dockerfile(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> str:
    try:
        return archive.read(member).decode("utf-8")
    except (UnicodeDecodeError, zipfile.BadZipFile, OSError, ValueError):
        raise refused(_("The Dockerfile is not readable UTF-8 text."), "bad_dockerfile") from None


def check_dockerfile(*, dockerfile: str, owner_prefix: str, bases: Iterable[str]) -> None:
    """What an uploaded Dockerfile may fetch: images only through `image_reference_allowed`
    (FROM, COPY/ADD --from, RUN --mount from=, ONBUILD's instruction, the syntax directive),
    and nothing from outside the context through ADD (a URL or a git remote is fetched by
    the engine itself, from the host's network and loopback, before any fence applies).
    The file is read as Docker reads it (continued lines joined)."""
    allowed = {_normalized(base) for base in bases if base}
    syntax = _directives(dockerfile).get("syntax")
    if syntax is not None:
        image_reference_allowed(reference=syntax, stages=[], owner_prefix=owner_prefix, bases=allowed)
    stages: list[str] = []
    for keyword, arguments in _dockerfile_instructions(dockerfile):
        if keyword == "ONBUILD":
            # A trigger runs in a later build FROM this image: checked like a line of its own.
            keyword, arguments = _instruction(arguments) if arguments.strip() else ("", "")
        for reference in _image_references(keyword, arguments):
            image_reference_allowed(
                reference=reference,
                stages=stages,
                owner_prefix=owner_prefix,
                bases=allowed,
                from_line=keyword == "FROM",
            )
        if keyword == "ADD":
            _check_add_sources(arguments, escape=_escape(dockerfile))
        if keyword == "FROM":
            words = arguments.split()
            stages.append(words[-1].lower() if len(words) >= 3 and words[-2].lower() == "as" else "")


HEX = re.compile(r"[0-9a-f]{1,64}", flags=re.IGNORECASE)


def image_reference_allowed(
    *, reference: str, stages: list[str], owner_prefix: str, bases: set[str], from_line: bool = False
) -> None:
    """The one rule for an image a build may use: an earlier stage of the same Dockerfile
    (by name, or by number for --from), an allow-listed base (`bases`, normalized), or one
    of the user's own built tags (`owner_prefix`). Never an image id or an id prefix: the
    engine resolves `FROM 9b764e` to whichever image's id starts so, another user's build
    included. Anything else, a variable or quoting included, is refused by name."""
    if reference.lower() in stages:
        return  # an earlier stage: the engine looks stage names up first
    if not from_line and reference.isdigit() and int(reference) < len(stages):
        return  # an earlier stage by its number (COPY --from=0); a larger one would be an id
    if any(char in reference for char in "$\\`'\""):
        raise refused(
            _(
                "The Dockerfile names an image through a variable, quoting or an escape "
                "(%(reference)s); write it out."
            )
            % {"reference": reference},
            "image_variable",
        )
    if _looks_like_id(reference):
        raise refused(
            _("The Dockerfile names an image by its id (%(reference)s); use its name.")
            % {"reference": reference},
            "image_id",
        )
    if reference.startswith("aivc-build/") and not reference.startswith(owner_prefix):
        raise refused(
            _("The Dockerfile uses images built for someone else: %(names)s") % {"names": reference},
            "others_image",
        )
    if reference.startswith(owner_prefix) or (from_line and reference == "scratch"):
        return
    if _normalized(reference) not in bases:
        raise refused(
            _(
                "The Dockerfile uses the image %(reference)s, which is not one of the lab's images "
                "or your own builds."
            )
            % {"reference": reference},
            "image_not_allowed",
        )


def _looks_like_id(reference: str) -> bool:
    """`sha256:...`, or a repository part (tag and digest aside) of 1-64 hex characters
    with no registry or namespace before it: what the engine may take for an image id."""
    if reference.lower().startswith("sha256:"):
        return True
    name = reference.split("@", 1)[0]
    repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return "/" not in repository and HEX.fullmatch(repository) is not None


def _normalized(reference: str) -> str:
    """A reference as the engine resolves a name: Docker Hub's host and `library/` dropped,
    `:latest` added when it names no tag or digest."""
    name = reference.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name = name.removeprefix("library/")
    last = name.rsplit("/", 1)[-1]
    if "@" not in name and ":" not in last:
        name += ":latest"
    return name


def _directives(dockerfile: str) -> dict[str, str]:
    """The parser directives (`# syntax=`, `# escape=`) at the top of the file, by name."""
    found: dict[str, str] = {}
    for line in dockerfile.removeprefix("\ufeff").split("\n"):
        directive = re.fullmatch(r"[ \t]*#[ \t]*([a-zA-Z]+)[ \t]*=[ \t]*(\S+)[ \t]*", line.removesuffix("\r"))
        if directive is None:
            break
        found.setdefault(directive.group(1).lower(), directive.group(2))
    return found


def _escape(dockerfile: str) -> str:
    return _directives(dockerfile).get("escape", "\\")


def _check_add_sources(arguments: str, *, escape: str) -> None:
    """ADD's sources must be files of the context: a URL or a git remote is refused, and so
    is a source written through a variable, quoting or an escape (the engine would expand
    `ADD $U` or `ADD ht\\tp://...` into a URL after this check)."""
    words = [word for word in _add_words(arguments) if not word.startswith("--")]
    for source in words[:-1]:
        if any(char in source for char in ("$", escape, "'", '"')):
            raise refused(
                _("ADD's source %(source)s uses a variable, quoting or an escape; write the file's name out.")
                % {"source": source},
                "add_variable",
            )
        if re.match(r"[a-z][a-z0-9+.-]*://", source, flags=re.IGNORECASE) or re.match(
            r"[^/]*@[^/]*:", source
        ):
            raise refused(
                _(
                    "ADD may not fetch %(source)s: builds have no network. Put the file in the zip, "
                    "or download it in the job."
                )
                % {"source": source},
                "add_remote",
            )


def _add_words(arguments: str) -> list[str]:
    """ADD's words, from its shell form or its JSON form (`ADD ["a", "b"]`)."""
    flags = []
    rest = arguments.strip()
    while rest.startswith("--"):
        flag, _space, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(word, str) for word in parsed):
            return flags + parsed
    return flags + rest.split()


def _dockerfile_instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, as Docker's parser sees them: lines split at
    "\n" only (one "\r" before it dropped), the escape directive honoured, a line that ends
    in the escape character (then spaces or tabs) continued, comments dropped. Whitespace
    other than spaces and tabs is refused: Docker and Python disagree on where it breaks or
    ends a line, and that gap would let a file say one thing to the check and another to
    the build."""
    text = dockerfile.removeprefix("\ufeff")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    odd = next((char for line in lines for char in line if _unusual(char)), None)
    if odd is not None:
        raise refused(
            _("The Dockerfile holds the character U+%(code)04X; use plain spaces, tabs and line ends.")
            % {"code": ord(odd)},
            "odd_whitespace",
        )
    escape = _escape(dockerfile)
    continued = re.compile(re.escape(escape) + r"[ \t]*$")
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in lines:
        bare = line.strip(" \t")
        if not bare or bare.startswith("#"):
            continue  # Docker skips comment and empty lines, also inside a continued one
        # A continued line goes on exactly where the last one stopped, with no space put in.
        text = line if pending else line.lstrip(" \t")
        if continued.search(text):
            pending += continued.sub("", text)
            continue
        instructions.append(_instruction(pending + text))
        pending = ""
    if pending.strip(" \t"):
        instructions.append(_instruction(pending))
    return instructions


def _unusual(char: str) -> bool:
    """A control character other than a tab, or whitespace other than a space or a tab."""
    if char in " \t":
        return False
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def _instruction(text: str) -> tuple[str, str]:
    keyword, *arguments = text.strip().split(maxsplit=1)
    return keyword.upper(), arguments[0] if arguments else ""


def _image_references(keyword: str, arguments: str) -> list[str]:
    """The images an instruction builds on: FROM's image, COPY's or ADD's --from, RUN's
    --mount from= (BuildKit)."""
    words = arguments.split()
    if keyword == "FROM":
        return [word for word in words if not word.startswith("--")][:1]
    if keyword in ("COPY", "ADD"):
        return [word.split("=", 1)[1] for word in words if word.lower().startswith("--from=")]
    if keyword == "RUN":
        options = [word.split("=", 1)[1] for word in words if word.lower().startswith("--mount=")]
        # BuildKit reads the option as CSV: a field may be quoted ("from=x").
        fields = [field.strip("\"' ") for option in options for field in option.split(",")]
        return [field.split("=", 1)[1] for field in fields if field.lower().startswith("from=")]
    return []


def _checked_members(members: list[zipfile.ZipInfo], *, zip_size: int) -> dict[str, zipfile.ZipInfo]:
    """The zip's files by path, after the shape rules: no absolute path, no `..`, no link or
    device, at most JOB_UPLOAD_MAX_FILES files and JOB_UPLOAD_MAX_UNPACKED_BYTES unpacked,
    and (past the first MB) at most JOB_UPLOAD_MAX_RATIO times the zip's own size. The sizes
    are the directory's; reading a file never yields more than its entry says."""
    if len(members) > settings.JOB_UPLOAD_MAX_FILES:
        raise refused(
            _("The zip holds more than %(most)s files.") % {"most": settings.JOB_UPLOAD_MAX_FILES},
            "too_many_files",
        )
    files: dict[str, zipfile.ZipInfo] = {}
    unpacked = 0
    for member in members:
        name = member.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            raise refused(_("The zip holds an absolute path: %(path)s") % {"path": name}, "absolute_path")
        if ".." in parts:
            raise refused(_("The zip holds a path with “..”: %(path)s") % {"path": name}, "parent_path")
        mode = member.external_attr >> 16
        # Zips made on Windows (or by Python's writestr) carry no file type: a plain file.
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise refused(_("The zip holds a link or special file: %(path)s") % {"path": name}, "not_a_file")
        if member.is_dir():
            continue
        unpacked += member.file_size
        if unpacked > settings.JOB_UPLOAD_MAX_UNPACKED_BYTES:
            raise refused(
                _("The zip unpacks to more than %(most)s MB.")
                % {"most": settings.JOB_UPLOAD_MAX_UNPACKED_BYTES // 2**20},
                "unpacked_too_large",
            )
        files["/".join(parts)] = member
    if unpacked > RATIO_FREE_BYTES and unpacked > settings.JOB_UPLOAD_MAX_RATIO * max(zip_size, 1):
        raise refused(
            _("The zip unpacks to %(ratio)s times its size; the most is %(most)s.")
            % {"ratio": unpacked // max(zip_size, 1), "most": settings.JOB_UPLOAD_MAX_RATIO},
            "ratio_too_high",
        )
    return files


def _joined(root: str, name: str) -> str:
    return f"{root}/{name}" if root else name


def _context_root(files: dict[str, zipfile.ZipInfo]) -> str:
    """The folder holding both the Dockerfile and the config: the root, or one subfolder."""
    if DOCKERFILE_NAME in files and CONFIG_NAME in files:
        return ""
    roots = {
        path.rsplit("/", 1)[0]
        for path in files
        if path.count("/") == 1
        and path.endswith("/" + CONFIG_NAME)
        and _joined(path.rsplit("/", 1)[0], DOCKERFILE_NAME) in files
    }
    if len(roots) == 1:
        return roots.pop()
    if len(roots) > 1:
        raise refused(
            _("The zip holds more than one folder with a Dockerfile and %(config)s.")
            % {"config": CONFIG_NAME},
            "several_roots",
        )
    raise refused(
        _("The zip needs a Dockerfile and %(config)s, at its root or in one folder.")
        % {"config": CONFIG_NAME},
        "missing_files",
    )


def _read_config(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> dict:
    try:
        config = json.loads(archive.read(member).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, OSError):
        raise refused(_("%(config)s is not valid JSON.") % {"config": CONFIG_NAME}, "bad_config") from None
    if not isinstance(config, dict):
        raise refused(_("%(config)s must hold one JSON object.") % {"config": CONFIG_NAME}, "bad_config")
    unknown = sorted(set(config) - CONFIG_FIELDS)
    if unknown:
        raise refused(
            _("%(config)s has unknown fields: %(names)s.")
            % {"config": CONFIG_NAME, "names": ", ".join(unknown)},
            "unknown_field",
        )
    if config.get("build_flag", True) is not True:
        raise refused(
            _("build_flag must be true: the portal runs only images it builds from the upload."),
            "no_build",
        )
    return {
        "name": _config_name(config, "name"),
        "executor_name": _config_name(config, "executor_name"),
        "memory_gb": _memory_gb(config.get("required_memory", DEFAULT_MEMORY)),
        "gpu_count": _gpu_count(config.get("num_gpus", 1)),
        "command": _run_command(config.get("run_params", {})),
    }


def _config_name(config: dict, key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not NAME_PATTERN.match(value.lower()):
        raise refused(
            _("%(key)s must be 3 to 64 letters, digits, “.”, “_” or “-”, starting with a letter or digit.")
            % {"key": key},
            "bad_name",
        )
    return value.lower()


def _memory_gb(value: object) -> int:
    """DoPQ's "20g" (or "2048m", or a number of GB), rounded up to whole GB."""
    match = MEMORY_PATTERN.match(str(value).strip()) if isinstance(value, (str, int)) else None
    if match is None or isinstance(value, bool):
        raise refused(_('required_memory must look like "20g" or "2048m".'), "bad_memory")
    amount, unit = int(match.group(1)), match.group(2).lower()
    memory_gb = -(-amount // 1024) if unit == "m" else amount
    if memory_gb < 1:
        raise refused(_("required_memory must be at least 1 GB."), "bad_memory")
    return memory_gb


def _gpu_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise refused(_("num_gpus must be a whole number from 0 up."), "bad_gpus")
    return value


def _run_command(run_params: object) -> str:
    """The job's command from run_params (empty: the image's own CMD). Only the safe subset
    is taken; any other parameter is refused by name."""
    if not isinstance(run_params, dict):
        raise refused(_("run_params must be a JSON object."), "bad_run_params")
    dangerous = sorted(set(run_params) & DANGEROUS_RUN_PARAMS)
    if dangerous:
        raise refused(
            _("run_params may not set %(names)s: the portal decides those.")
            % {"names": ", ".join(dangerous)},
            "dangerous_run_params",
        )
    unknown = sorted(set(run_params) - SAFE_RUN_PARAMS)
    if unknown:
        raise refused(
            _("run_params has unknown parameters: %(names)s (allowed: %(safe)s).")
            % {"names": ", ".join(unknown), "safe": ", ".join(sorted(SAFE_RUN_PARAMS))},
            "unknown_run_params",
        )
    command = run_params.get("command", "")
    if isinstance(command, list) and all(isinstance(part, str) for part in command):
        return shlex.join(command)
    if not isinstance(command, str):
        raise refused(_("run_params.command must be a string or a list of strings."), "bad_command")
    return command.strip()


def _context_tar(
    archive: zipfile.ZipFile, files: dict[str, zipfile.ZipInfo], root: str, *, into: BinaryIO
) -> tuple[int, str]:
    """The root folder's files as a tar, with plain modes and no owners (the build context),
    written to `into` in chunks; its size and sha256."""
    prefix = f"{root}/" if root else ""
    target = _Hashing(into)
    with tarfile.open(fileobj=target, mode="w") as tar:
        for path, member in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            info = tarfile.TarInfo(path[len(prefix) :])
            info.size = member.file_size
            info.mode = 0o755 if (member.external_attr >> 16) & 0o111 else 0o644
            try:
                with archive.open(member) as source:
                    # tarfile copies exactly info.size bytes and raises if the file is short.
                    tar.addfile(info, source)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError):
                raise refused(
                    _("The zip's file %(path)s cannot be read.") % {"path": path}, "bad_member"
                ) from None
    return target.size, target.sha256.hexdigest()


class _Hashing:
    """A write-only file that hashes and counts what passes through to `inner`."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner, self.sha256, self.size = inner, hashlib.sha256(), 0

    def write(self, chunk: bytes) -> int:
        self.sha256.update(chunk)
        self.size += len(chunk)
        return self.inner.write(chunk)

    def tell(self) -> int:
        return self.size
