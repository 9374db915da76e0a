"""The pids part of the build fence. Docker's classic builder takes no pids limit for a
step's container, but it does take a parent cgroup: every step runs inside
JOB_BUILD_CGROUP_PARENT, and a `pids.max` on that parent bounds all the builds of the host
together (a fork bomb in `RUN` stops there, not at the kernel's pid_max). The install
makes the parent (deploy/build-fence/setup.sh, or a systemd slice with TasksMax); an agent
running as root makes it itself. A build never runs without it unless the lab set
JOB_BUILD_PIDS_LIMIT=0."""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


class FenceMissing(Exception):
    """The host lacks the parent cgroup (or its pids limit) the build fence needs."""


def cgroup_parent_argument(parent: str) -> str:
    """The value the engine takes: a slice name as it is, a cgroupfs path from the root."""
    return parent if parent.endswith(".slice") else "/" + parent.strip("/")


def _relative_path(parent: str) -> Path:
    """Where the parent lives below the hierarchy's root: `a-b.slice` is systemd's
    `a.slice/a-b.slice`; anything else a plain path."""
    if parent.endswith(".slice"):
        parts = parent.removesuffix(".slice").split("-")
        return Path(*("-".join(parts[: index + 1]) + ".slice" for index in range(len(parts))))
    return Path(parent.strip("/"))


def pids_max_file(parent: str, *, root: Path = CGROUP_ROOT) -> Path:
    """The parent's pids.max: cgroup v2 keeps every controller in one tree, v1 has a
    `pids` hierarchy of its own."""
    if (root / "cgroup.controllers").exists():
        return root / _relative_path(parent) / "pids.max"
    return root / "pids" / _relative_path(parent) / "pids.max"


def ensure_pids_fence(*, parent: str, limit: int, root: Path = CGROUP_ROOT) -> int:
    """The pids limit the builds of this host run under (at most `limit`), making the
    parent cgroup and setting its limit when this process may; FenceMissing when neither
    the install nor this process put one there."""
    path = pids_max_file(parent, root=root)
    current = _read_limit(path)
    if current is not None and current <= limit:
        return current
    try:
        if current is None and not parent.endswith(".slice"):
            path.parent.mkdir(parents=True, exist_ok=True)
            if (root / "cgroup.controllers").exists():
                _enable_pids(root, _relative_path(parent))
        path.write_text(str(limit))
    except OSError as error:
        raise FenceMissing(
            f"the parent cgroup {parent} has no pids limit of at most {limit} and this agent cannot set one "
            f"({error.strerror or error}); run deploy/build-fence/setup.sh as root"
        ) from None
    found = _read_limit(path)
    if found is None or found > limit:
        raise FenceMissing(f"the parent cgroup {parent} did not take the pids limit {limit}")
    return found


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _enable_pids(root: Path, relative: Path) -> None:
    """cgroup v2: the pids controller must be on in every level above the parent."""
    level = root
    for part in relative.parts:
        control = level / "cgroup.subtree_control"
        if "pids" not in control.read_text().split():
            control.write_text("+pids")
        level = level / part
