"""Which container a host process belongs to, read from its cgroup file. NVML names GPU
users by host pid only; the cgroup path is where the engine wrote the container id."""

import re
from pathlib import Path

# cgroup v1 `12:devices:/docker/<id>`, v2 with the systemd driver
# `0::/system.slice/docker-<id>.scope`, v2 with the cgroupfs driver `0::/docker/<id>`, and the
# same shapes from podman (libpod-) and containerd / CRI-O under Kubernetes.
_CONTAINER_ID = re.compile(r"(?:docker|libpod|cri-containerd|crio)[-/]([0-9a-f]{64})(?![0-9a-f])")


def container_id_from_cgroup(text: str) -> str | None:
    """The 64-hex container id in the content of a /proc/<pid>/cgroup file; None for a
    process outside any container."""
    for line in text.splitlines():
        _, _, path = line.partition(":")
        _, _, path = path.partition(":")
        match = _CONTAINER_ID.search(path)
        if match:
            return match.group(1)
    return None


def container_id_for_pid(pid: int, *, proc_root: str | Path = "/proc") -> str | None:
    """The container of host process `pid`; None when it runs outside a container or has
    already exited (its cgroup file is gone)."""
    try:
        text = (Path(proc_root) / str(int(pid)) / "cgroup").read_text(errors="replace")
    except OSError:
        return None
    return container_id_from_cgroup(text)


def same_container(process_container_id: str | None, holder_container_id: str) -> bool:
    """Whether two ids name one container; either may be the short (12-hex) form."""
    if not process_container_id or not holder_container_id:
        return False
    return process_container_id.startswith(holder_container_id) or holder_container_id.startswith(
        process_container_id
    )
