"""An in-memory container runtime for unit tests of the lifecycle logic; the contract
test (tests/containers/test_runtime_contract.py) keeps it in step with the Docker runtime."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from containers.models import Host
from containers.runtime import (
    BuildFailed,
    BuildFence,
    BuiltImage,
    ContainerRuntime,
    EngineUnavailable,
    ImageMissing,
    NameInUse,
    PullFailed,
)
from containers.specs import ContainerSpec, ContainerState, belongs_to


class FakeEngine:
    """In-memory engine state shared by every FakeRuntime for one host."""

    def __init__(self) -> None:
        self.containers: dict[str, tuple[ContainerState, ContainerSpec]] = {}
        self.images: set[str] | None = None  # None: every image is present
        self.pullable: set[str] = set()  # images a pull finds (added to `images`)
        self.pulls: list[str] = []
        self.reachable = True
        self.runs: list[ContainerSpec] = []
        self.networks: set[str] = set()  # isolated networks made, as DockerRuntime makes them
        self.ids = itertools.count(1)
        self.exit_codes: dict[str, int] = {}  # by container id
        self.output: dict[str, bytes] = {}  # by container name, what a container "printed"
        self.builds: list[tuple[str, bytes]] = []  # (tag, context) of each build asked for
        self.build_failure: str = ""  # set: every build fails with this message
        self.build_memory: list[int] = []  # the memory limit of each build
        self.build_fences: list[BuildFence] = []
        self.built: dict[str, BuiltImage] = {}  # the images builds made, by id
        self.in_use: set[str] = set()  # image ids a container uses (removal refused)
        self.free_bytes: int | None = None  # the engine's free disk; None: unknown
        self.cgroup_driver = "cgroupfs"

    def kill(self, name: str) -> None:
        """What a container that died looks like: still there, exited."""
        for container_id, (state, spec) in list(self.containers.items()):
            if state.name == name:
                self.containers[container_id] = (
                    ContainerState(id=state.id, name=state.name, status="exited", labels=state.labels),
                    spec,
                )

    def exit(self, name: str, *, code: int, output: bytes = b"") -> None:
        """What a batch job's container that finished looks like: exited with `code`."""
        self.output[name] = self.output.get(name, b"") + output
        self.kill(name)
        for container_id, (state, _) in self.containers.items():
            if state.name == name:
                self.exit_codes[container_id] = code

    def running_names(self) -> list[str]:
        return sorted(state.name for state, _ in self.containers.values() if state.is_running)


class FakeRuntime(ContainerRuntime):
    """A runtime for unit tests of the lifecycle logic. Tests reach the shared state with
    `FakeRuntime.engine_for(host)` and call `FakeRuntime.reset()` between tests."""

    _engines: dict[int, FakeEngine] = {}
    _lock = threading.RLock()

    @classmethod
    def engine_for(cls, host: Host) -> FakeEngine:
        with cls._lock:
            return cls._engines.setdefault(host.pk, FakeEngine())

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._engines.clear()

    @property
    def engine(self) -> FakeEngine:
        return self.engine_for(self.host)

    def _check_reachable(self) -> None:
        if not self.engine.reachable:
            raise EngineUnavailable(f"Docker engine of {self.host.name} unreachable (fake).")

    def list_managed(self) -> list[ContainerState]:
        self._check_reachable()
        return [state for state, _ in self.engine.containers.values() if belongs_to(state.labels, self.host)]

    def run(self, spec: ContainerSpec) -> ContainerState:
        self._check_reachable()
        engine = self.engine
        with self._lock:
            if engine.images is not None and spec.image not in engine.images:
                raise ImageMissing(f"No such image: {spec.image}")
            if any(state.name == spec.name for state, _ in engine.containers.values()):
                raise NameInUse(f'The container name "/{spec.name}" is already in use.')
            state = ContainerState(
                id=f"fake{next(engine.ids):060d}", name=spec.name, status="running", labels=spec.labels
            )
            if spec.security.network:
                engine.networks.add(spec.security.network)
            engine.containers[state.id] = (state, spec)
            engine.runs.append(spec)
        return state

    def remove(self, container_id: str) -> None:
        self._check_reachable()
        with self._lock:
            self.engine.containers.pop(container_id, None)

    def engine_version(self) -> str:
        self._check_reachable()
        return "fake"

    def image_present(self, reference: str) -> bool:
        self._check_reachable()
        return self.engine.images is None or reference in self.engine.images

    def lab_images(self) -> list[str]:
        self._check_reachable()
        return sorted(self.engine.images or ())

    def pull_image(self, reference: str, *, progress: Callable[[str], None]) -> None:
        self._check_reachable()
        engine = self.engine
        engine.pulls.append(reference)
        if reference not in engine.pullable:
            raise PullFailed(f"pull access denied for {reference}, repository does not exist (fake)")
        progress("Pulling fs layer")
        progress("Download complete")
        with self._lock:
            if engine.images is not None:
                engine.images.add(reference)

    def build_image(self, *, tag: str, context: BinaryIO, labels: dict[str, str], fence: BuildFence) -> bytes:
        self._check_reachable()
        engine = self.engine
        engine.builds.append((tag, context.read()))
        engine.build_memory.append(fence.memory_bytes)
        engine.build_fences.append(fence)
        if engine.build_failure:
            raise BuildFailed(engine.build_failure, output=f"ERROR: {engine.build_failure}\n".encode())
        with self._lock:
            if engine.images is not None:
                engine.images.add(tag)
            image_id = f"sha256:{len(engine.built) + 1:064x}"
            engine.built[image_id] = BuiltImage(id=image_id, tags=(tag,), created="", labels=dict(labels))
        return f"Successfully tagged {tag}\n".encode()

    def build_space_free(self) -> int | None:
        self._check_reachable()
        return self.engine.free_bytes

    def cgroup_driver(self) -> str:
        self._check_reachable()
        return self.engine.cgroup_driver

    def built_images(self, *, label: str) -> list[BuiltImage]:
        self._check_reachable()
        key, _, value = label.partition("=")
        return [image for image in self.engine.built.values() if image.labels.get(key) == value]

    def remove_image(self, image_id: str) -> bool:
        self._check_reachable()
        engine = self.engine
        if image_id in engine.in_use or image_id not in engine.built:
            return False
        with self._lock:
            image = engine.built.pop(image_id)
            if engine.images is not None:
                engine.images.difference_update(image.tags)
        return True

    def stop(self, container_id: str, *, grace_s: int) -> None:
        self._check_reachable()
        with self._lock:
            found = self.engine.containers.get(container_id)
            if found is not None and found[0].is_running:
                self.engine.exit(found[0].name, code=143)  # 128 + SIGTERM

    def exit_code(self, container_id: str) -> int | None:
        self._check_reachable()
        return self.engine.exit_codes.get(container_id)

    def logs(self, container_id: str) -> Iterator[bytes]:
        self._check_reachable()
        found = self.engine.containers.get(container_id)
        if found is not None:
            yield self.engine.output.get(found[0].name, b"")
