"""Container engines. The one module that imports `docker`: the rest of the portal talks to
a `ContainerRuntime` and hands it a `ContainerSpec` (containers/specs.py), so unit tests can
swap in the `FakeRuntime` (containers/fake_runtime.py) and the Docker runtime is tested
against a real engine."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

from django.conf import settings
from django.utils.module_loading import import_string

from containers.models import Host
from containers.specs import (
    LABEL_MANAGED,
    ContainerSpec,
    ContainerState,
    SecurityOptions,
    belongs_to,
    choose_cpus,
    format_cpuset,
    parse_cpuset,
)

SSH_PORT = "22/tcp"
ICC_OPTION = "com.docker.network.bridge.enable_icc"
NETWORK_LABELS = {"aivc.purpose": "tenant-isolation"}
# The entrypoint of the images built from deploy/images/ (and the offline test image).
LAB_ENTRYPOINT = "/usr/local/sbin/aivc-entrypoint"


# Launch threads of one process take turns making the isolated network.
_NETWORK_LOCK = threading.Lock()
# ... and choosing CPUs, so two launches of one tick never pick the same free ones.
_CPUSET_LOCK = threading.Lock()


class RuntimeProblem(Exception):
    """Base of what an engine can answer instead of doing the work."""


class EngineUnavailable(RuntimeProblem):
    """The engine did not answer: nothing was decided, try again later."""


class ImageMissing(RuntimeProblem):
    """The engine does not hold the image: launching cannot succeed until a maintainer
    pulls it."""


class PullFailed(RuntimeProblem):
    """The engine could not pull the image (unknown name, no registry access, no space)."""


class NameInUse(RuntimeProblem):
    """A container with the spec's name exists already (e.g. a crashed tick made it)."""


class BuildFailed(RuntimeProblem):
    """The engine could not build an uploaded image (a bad Dockerfile, a failing step, the
    time limit); the message says which. The build's output so far is in `output`."""

    def __init__(self, message: str, *, output: bytes = b"") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class BuildFence:
    """What a build's steps run under (docs/security.md, "The build fence"): the classic
    builder takes a network mode, CPU quota, memory and a parent cgroup (whose pids limit
    bounds every step), not capabilities or no-new-privileges."""

    timeout_s: int
    memory_bytes: int
    nano_cpus: int
    network: str = "none"
    proxy: str = ""
    cgroup_parent: str = ""

    CPU_PERIOD_US = 100_000

    def build_params(self) -> dict:
        """The engine's /build query parameters for the fence."""
        params: dict = {"networkmode": self.network}
        if self.memory_bytes:  # 0: no limit (only the benchmark's unfenced build)
            params.update(memory=self.memory_bytes, memswap=self.memory_bytes)
        if self.nano_cpus:
            params.update(
                cpuperiod=self.CPU_PERIOD_US, cpuquota=max(1000, self.nano_cpus * self.CPU_PERIOD_US // 10**9)
            )
        if self.cgroup_parent:
            params["cgroupparent"] = self.cgroup_parent
        if self.proxy:
            # Docker's predefined proxy arguments: RUN steps see them, the image's history
            # does not keep them.
            names = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
            params["buildargs"] = json.dumps(dict.fromkeys(names, self.proxy))
        return params


@dataclass(frozen=True)
class BuiltImage:
    """An image the portal built, as the engine lists it."""

    id: str
    tags: tuple[str, ...]
    created: str  # the engine's RFC 3339 time
    labels: dict


class LaunchFailed(RuntimeProblem):
    """The engine refused the container for another reason (its message says why)."""


class PortInUse(LaunchFailed):
    """Something on the server already listens on the container's forward port: the engine
    answered, so this is the launch's problem, not the engine's."""


# What dockerd says when a published port is taken: by another container ("port is already
# allocated") or by a process on the server ("address already in use"). Both answers also
# contain "external connectivity", which must not read as an engine that does not answer.
_PORT_TAKEN = re.compile(
    r"(?:Bind for|listen tcp[46]?) [^ ]*?:(\d+)[: ].*(?:already allocated|already in use)"
)


class ContainerRuntime(ABC):
    """One host's container engine."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @abstractmethod
    def list_managed(self) -> list[ContainerState]:
        """All containers, running or not, that carry this portal's labels for the host."""

    @abstractmethod
    def run(self, spec: ContainerSpec) -> ContainerState:
        """Creates and starts the container; raises a `RuntimeProblem` subclass."""

    @abstractmethod
    def remove(self, container_id: str) -> None:
        """Stops and removes the container; one already gone is not an error."""

    def engine_version(self) -> str:
        """The engine's version, for the agent's heartbeat; raises EngineUnavailable."""
        return ""

    @abstractmethod
    def image_present(self, reference: str) -> bool:
        """Whether the engine holds the image."""

    @abstractmethod
    def pull_image(self, reference: str, *, progress: Callable[[str], None]) -> None:
        """Pulls the image, calling `progress` with the engine's status lines; raises
        `PullFailed` or `EngineUnavailable`."""

    @abstractmethod
    def lab_images(self) -> list[str]:
        """Tags of the engine's images that start the lab entrypoint (key-only sshd)."""

    # Batch jobs: a job's container is stopped at its time limit and read (exit code, output)
    # before it is removed.

    @abstractmethod
    def build_image(self, *, tag: str, context: BinaryIO, labels: dict[str, str], fence: BuildFence) -> bytes:
        """Builds `tag` from a build context (an uncompressed tar holding a Dockerfile, read
        from the open file `context`) and returns the build's output; BuildFailed with the
        output so far if it fails or runs past `fence.timeout_s`. Each step runs inside the
        fence. Never asks for a newer base: a FROM should name an image the engine has."""

    def build_space_free(self) -> int | None:
        """Free bytes on the filesystem of the engine's data root; None if unknown."""
        return None

    def cgroup_driver(self) -> str:
        """The engine's cgroup driver (`cgroupfs`, `systemd`); empty if unknown."""
        return ""

    def built_images(self, *, label: str) -> list[BuiltImage]:
        """The engine's images that carry `label` (the portal's builds)."""
        return []

    def remove_image(self, image_id: str) -> bool:
        """Removes an image (False if a container still uses it or it is gone)."""
        return False

    @abstractmethod
    def stop(self, container_id: str, *, grace_s: int) -> None:
        """SIGTERM, up to `grace_s` seconds to exit, then SIGKILL; the container stays."""

    @abstractmethod
    def exit_code(self, container_id: str) -> int | None:
        """The exit code of a container that has exited; None while it runs or if gone."""

    @abstractmethod
    def logs(self, container_id: str) -> Iterator[bytes]:
        """The container's output (stdout and stderr, as written), in chunks."""


class DockerRuntime(ContainerRuntime):
    """A Docker engine through the SDK (never the CLI, never a shell)."""

    STOP_TIMEOUT_S = 10
    API_TIMEOUT_S = 30

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._client = None
        # The isolated network's id, checked once per runtime (a tick's launches share it).
        self._networks: dict[str, str] = {}
        # How much of each host CPU the engine's running containers are booked for, read at
        # the runtime's first launch and kept up to date by its own picks.
        self._cpu_load: Counter[int] | None = None
        self._cpus: list[int] = []

    @property
    def client(self):
        import docker

        if self._client is None:
            try:
                if self.host.docker_url:
                    self._client = docker.DockerClient(
                        base_url=self.host.docker_url, timeout=self.API_TIMEOUT_S
                    )
                else:
                    self._client = docker.from_env(timeout=self.API_TIMEOUT_S)
            except docker.errors.DockerException as error:
                raise EngineUnavailable(f"Docker engine of {self.host.name} unreachable: {error}") from None
        return self._client

    def _translate(self, error: Exception) -> RuntimeProblem:
        import docker
        import requests

        if isinstance(error, RuntimeProblem):
            return error
        if isinstance(error, docker.errors.ImageNotFound):
            return ImageMissing(str(error.explanation or error))
        if isinstance(error, docker.errors.APIError):
            if error.status_code == 409:
                return NameInUse(str(error.explanation or error))
            taken = _PORT_TAKEN.search(str(error.explanation or error))
            if taken:
                return PortInUse(f"port {taken.group(1)} of {self.host.name} is in use by another program")
            if error.status_code and error.status_code >= 500 and "connect" in str(error).lower():
                return EngineUnavailable(str(error.explanation or error))
            return LaunchFailed(str(error.explanation or error))
        if isinstance(error, requests.exceptions.RequestException | docker.errors.DockerException | OSError):
            return EngineUnavailable(f"Docker engine of {self.host.name} unreachable: {error}")
        return LaunchFailed(str(error))

    def _ensure_network(self, name: str) -> str:
        """The id of the portal's bridge network with inter-container traffic off, made
        once; an existing network of that name that lets containers reach each other is
        refused. The engine accepts two networks of one name, so when launches made it at
        the same time (the launch pool's threads, two agents on one engine), the oldest is
        kept, the others are removed, and containers are attached by id. Checked once per
        runtime object, i.e. once per tick and host: each check lists the engine's
        networks under a lock the launch threads share."""
        import docker

        def named() -> list:  # the engine's name filter matches substrings
            found = [network for network in self.client.networks.list(names=[name]) if network.name == name]
            return sorted(found, key=lambda network: (network.attrs.get("Created", ""), network.id))

        with _NETWORK_LOCK:
            if name in self._networks:
                return self._networks[name]
            found = named()
            if not found:
                try:
                    self.client.networks.create(
                        name, driver="bridge", options={ICC_OPTION: "false"}, labels=NETWORK_LABELS
                    )
                except docker.errors.APIError as error:
                    if error.status_code != 409:  # 409: another tick made it meanwhile
                        raise
                found = named()
        if not found:
            raise LaunchFailed(f"The network {name} could not be made.")
        kept, *duplicates = found
        for duplicate in duplicates:
            # A duplicate a concurrent launch already uses stays until it is empty.
            with contextlib.suppress(docker.errors.APIError):
                duplicate.remove()
        options = kept.attrs.get("Options") or {}
        if options.get(ICC_OPTION) != "false":
            raise LaunchFailed(
                f"The network {name} lets containers reach each other ({ICC_OPTION} is not false); "
                "remove it or name another in CONTAINER_NETWORK."
            )
        with _NETWORK_LOCK:
            self._networks[name] = kept.id
        return kept.id

    def _security_options(self, security: SecurityOptions) -> dict:
        import docker

        options = {
            "cap_drop": ["ALL"],
            "cap_add": list(security.cap_add),
            "security_opt": ["no-new-privileges:true"] if security.no_new_privileges else [],
            "ulimits": [
                docker.types.Ulimit(name="nofile", soft=security.nofile, hard=security.nofile),
                docker.types.Ulimit(name="nproc", soft=security.nproc, hard=security.nproc),
            ],
            "log_config": docker.types.LogConfig(
                type="json-file",
                config={"max-size": security.log_max_size, "max-file": str(security.log_max_files)},
            ),
        }
        if security.pids_limit:
            options["pids_limit"] = security.pids_limit
        if security.network:
            options["network"] = security.network
        return options

    def _read_cpu_load(self) -> Counter[int]:
        """CPUs booked on each host CPU by every running container of the engine (the
        portal's and any other): a pinned container's CPUs spread over its cpuset."""
        load: Counter[int] = Counter()
        for container in self.client.containers.list(filters={"status": "running"}, ignore_removed=True):
            host_config = container.attrs.get("HostConfig") or {}
            pinned = parse_cpuset(host_config.get("CpusetCpus") or "")
            if pinned:
                booked = (host_config.get("NanoCpus") or 0) / 1e9 or len(pinned)
                for cpu in pinned:
                    load[cpu] += booked / len(pinned)
        return load

    def with_cpuset(self, spec: ContainerSpec) -> ContainerSpec:
        """The spec pinned to its `cpu_count` least-loaded host CPUs (docs/containers.md),
        so `nproc` and thread pools see the booking's size; the CFS quota stays the limit.
        Unchanged when pinning is off, already chosen, or the host has too few CPUs."""
        if not settings.CONTAINER_CPUSET or spec.cpuset or not spec.cpu_count:
            return spec
        with _CPUSET_LOCK:
            if self._cpu_load is None:
                self._cpus = list(range(int(self.client.info().get("NCPU") or 0)))
                self._cpu_load = self._read_cpu_load()
            chosen = choose_cpus(count=spec.cpu_count, cpus=self._cpus, load=self._cpu_load)
            if chosen is None:
                return spec
            for cpu in chosen:
                self._cpu_load[cpu] += spec.nano_cpus / 1e9 / len(chosen)
        return replace(spec, cpuset=format_cpuset(chosen))

    def list_managed(self) -> list[ContainerState]:
        # The engine filters by this portal's scope; which host a container is on is
        # decided here, since old containers carry the host's name instead of its id.
        filters = {"label": f"{LABEL_MANAGED}={settings.CONTAINER_SCOPE}"}
        try:
            containers = self.client.containers.list(all=True, filters=filters, ignore_removed=True)
        except Exception as error:
            raise self._translate(error) from None
        return [
            ContainerState(id=c.id, name=c.name, status=c.status, labels=dict(c.labels))
            for c in containers
            if belongs_to(c.labels, self.host)
        ]

    def create_options(self, spec: ContainerSpec) -> dict:
        """What `run` hands the engine's create call for this spec, less the network."""
        import docker

        device_requests = []
        if spec.gpu_ids:
            device_requests.append(
                docker.types.DeviceRequest(driver="nvidia", device_ids=spec.gpu_ids, capabilities=[["gpu"]])
            )
        options = {
            "image": spec.image,
            "command": spec.command,
            "name": spec.name,
            "hostname": spec.name,
            "detach": True,
            "nano_cpus": spec.nano_cpus,
            "mem_limit": spec.memory_bytes,
            "memswap_limit": spec.memory_swap_bytes,
            "environment": spec.environment,
            "ports": {SSH_PORT: spec.ssh_port} if spec.ssh_port else {},
            "mounts": [
                docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                for m in spec.mounts
            ],
            "labels": spec.labels,
            "device_requests": device_requests,
            "privileged": False,
            "init": True,
            **self._security_options(spec.security),
        }
        if spec.shm_bytes:
            options["shm_size"] = spec.shm_bytes
        if spec.cpuset:
            options["cpuset_cpus"] = spec.cpuset
        return options

    def run(self, spec: ContainerSpec) -> ContainerState:
        container = None
        try:
            options = self.create_options(self.with_cpuset(spec))
            if spec.security.network:
                options["network"] = self._ensure_network(spec.security.network)
            container = self.client.containers.create(**options)
            container.start()
            container.reload()
        except Exception as error:
            problem = self._translate(error)
            if container is not None and not isinstance(problem, EngineUnavailable):
                # Created but not started (e.g. the port is taken): leave nothing behind;
                # if even that fails, the next tick removes it as unowned.
                with contextlib.suppress(RuntimeProblem):
                    self.remove(container.id)
            raise problem from None
        return ContainerState(
            id=container.id, name=container.name, status=container.status, labels=dict(container.labels)
        )

    def remove(self, container_id: str) -> None:
        import docker

        try:
            container = self.client.containers.get(container_id)
            if container.status == "running":
                container.stop(timeout=self.STOP_TIMEOUT_S)
            container.remove(force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as error:
            if error.status_code == 409:
                return  # the engine is removing it already
            raise self._translate(error) from None
        except Exception as error:
            raise self._translate(error) from None

    def image_present(self, reference: str) -> bool:
        import docker

        try:
            self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        except Exception as error:
            raise self._translate(error) from None
        return True

    def lab_images(self) -> list[str]:
        try:
            images = self.client.images.list()
        except Exception as error:
            raise self._translate(error) from None
        return sorted(
            tag
            for image in images
            if LAB_ENTRYPOINT in ((image.attrs.get("Config") or {}).get("Entrypoint") or [])
            for tag in image.tags
        )

    def pull_image(self, reference: str, *, progress: Callable[[str], None]) -> None:
        import docker

        repository, tag = docker.utils.parse_repository_tag(reference)
        try:
            for line in self.client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in line:
                    raise PullFailed(str(line["error"]))
                status = " ".join(str(line[key]) for key in ("status", "progress") if line.get(key))
                if status:
                    progress(status)
        except PullFailed:
            raise
        except docker.errors.APIError as error:
            raise PullFailed(str(error.explanation or error)) from None
        except Exception as error:
            raise self._translate(error) from None

    def engine_version(self) -> str:
        try:
            return str(self.client.version().get("Version", ""))
        except Exception as error:
            raise self._translate(error) from None

    def build_image(self, *, tag: str, context: BinaryIO, labels: dict[str, str], fence: BuildFence) -> bytes:
        import time

        import docker
        import requests
        import urllib3

        output = bytearray()
        timeout_s = fence.timeout_s
        deadline = time.monotonic() + timeout_s
        api = self.client.api
        params = {
            "t": tag,
            "labels": json.dumps(labels),
            "rm": True,
            "forcerm": True,
            "pull": False,
            **fence.build_params(),
        }
        try:
            # The engine's /build, called directly: the SDK's build() has no CPU quota and
            # no parent cgroup. The stream carries the engine's progress; its read timeout
            # ends a step that stays silent past the limit, the deadline one that keeps
            # talking, and leaving the stream makes the engine cancel the build.
            response = api._post(
                api._url("/build"),
                data=context,
                params=params,
                headers={"Content-Type": "application/tar"},
                stream=True,
                timeout=timeout_s,
            )
            api._raise_for_status(response)
            for line in api._stream_helper(response, decode=True):
                if "stream" in line:
                    output += str(line["stream"]).encode()
                if "error" in line:
                    message = str(line.get("error") or "").strip()
                    output += f"ERROR: {message}\n".encode()
                    raise BuildFailed(message, output=bytes(output))
                if time.monotonic() > deadline:
                    raise BuildFailed(f"the build ran longer than {timeout_s} s", output=bytes(output))
        except BuildFailed:
            raise
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError):
            raise BuildFailed(f"the build ran longer than {timeout_s} s", output=bytes(output)) from None
        except docker.errors.APIError as error:
            problem = self._translate(error)
            if isinstance(problem, EngineUnavailable):
                raise problem from None
            raise BuildFailed(str(error.explanation or error), output=bytes(output)) from None
        except Exception as error:
            raise self._translate(error) from None
        return bytes(output)

    def build_space_free(self) -> int | None:
        import shutil

        try:
            root = str(self.client.info().get("DockerRootDir") or "")
        except Exception as error:
            raise self._translate(error) from None
        try:
            return shutil.disk_usage(root).free if root else None
        except OSError:
            return None  # the engine's disks are not this machine's

    def cgroup_driver(self) -> str:
        try:
            return str(self.client.info().get("CgroupDriver") or "")
        except Exception as error:
            raise self._translate(error) from None

    def built_images(self, *, label: str) -> list[BuiltImage]:
        try:
            images = self.client.images.list(filters={"label": label})
        except Exception as error:
            raise self._translate(error) from None
        return [
            BuiltImage(
                id=image.id,
                tags=tuple(image.tags),
                created=str(image.attrs.get("Created", "")),
                labels=dict(image.labels or {}),
            )
            for image in images
        ]

    def remove_image(self, image_id: str) -> bool:
        import docker

        try:
            self.client.images.remove(image_id, force=False, noprune=False)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as error:
            if error.status_code == 409:
                return False  # a container uses it
            raise self._translate(error) from None
        except Exception as error:
            raise self._translate(error) from None
        return True

    def stop(self, container_id: str, *, grace_s: int) -> None:
        import docker

        try:
            self.client.containers.get(container_id).stop(timeout=grace_s)
        except docker.errors.NotFound:
            return
        except Exception as error:
            raise self._translate(error) from None

    def exit_code(self, container_id: str) -> int | None:
        import docker

        try:
            container = self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return None
        except Exception as error:
            raise self._translate(error) from None
        state = container.attrs.get("State", {})
        return None if state.get("Running") else state.get("ExitCode")

    def logs(self, container_id: str) -> Iterator[bytes]:
        import docker

        try:
            stream = self.client.containers.get(container_id).logs(stream=True, follow=False)
            yield from stream
        except docker.errors.NotFound:
            return
        except Exception as error:
            raise self._translate(error) from None


def get_runtime(host: Host) -> ContainerRuntime:
    """The runtime `settings.CONTAINER_RUNTIME` names, for this host's engine."""
    return import_string(settings.CONTAINER_RUNTIME)(host)
