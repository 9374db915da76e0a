"""The contract every ContainerRuntime keeps, run against the FakeRuntime and against the
DockerRuntime on a real engine, so the fake the lifecycle tests rely on cannot drift from
the engine. Where the two need the world to act (a process that exits with a code), the
`world` fixture does it each runtime's way; what the runtime reports must then agree."""

import socket
import time
from dataclasses import replace

import pytest
from django.conf import settings

from containers.fake_runtime import FakeRuntime
from containers.runtime import ContainerRuntime, ImageMissing, NameInUse, get_runtime
from containers.specs import LABEL_HOST_ID, LABEL_MANAGED, LABEL_RESERVATION, ContainerSpec, container_spec
from tests.containers.conftest import TEST_IMAGE
from tests.factories import HostFactory, ReservationFactory, UserFactory

MISSING_IMAGE = "aivc-test/never-built:none"


class FakeWorld:
    """Stands in for the processes inside the fake's containers."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self.engine = FakeRuntime.engine_for(runtime.host)

    def spec_exiting_with(self, spec: ContainerSpec, code: int, output: bytes) -> ContainerSpec:
        return spec

    def wait_for_exit(self, runtime: ContainerRuntime, spec: ContainerSpec, code: int, output: bytes) -> None:
        self.engine.exit(spec.name, code=code, output=output)


class DockerWorld:
    """The real engine runs the busybox test image's commands."""

    def spec_exiting_with(self, spec: ContainerSpec, code: int, output: bytes) -> ContainerSpec:
        return replace(spec, command=["sh", "-c", f"printf '{output.decode()}'; exit {code}"])

    def wait_for_exit(self, runtime: ContainerRuntime, spec: ContainerSpec, code: int, output: bytes) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not any(state.is_running for state in runtime.list_managed() if state.name == spec.name):
                return
            time.sleep(0.1)
        raise AssertionError(f"{spec.name} did not exit")


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker)])
def kind(request):
    if request.param == "fake":
        request.getfixturevalue("fake_runtime")
    else:
        request.getfixturevalue("docker_scope")
    return request.param


@pytest.fixture
def runtime(kind, engine_host) -> ContainerRuntime:
    if kind == "fake":
        # Like the test engine, the fake holds the test image and nothing else.
        FakeRuntime.engine_for(engine_host).images = {TEST_IMAGE}
    return get_runtime(engine_host)


@pytest.fixture
def world(kind, runtime):
    return FakeWorld(runtime) if kind == "fake" else DockerWorld()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def make_spec(engine_host, default_profile, db):
    """A spec as the lifecycle builds it (container_spec), for a user of its own, running
    the test image's `sleep` on a free port."""

    def make(username: str = "m11007s21", **changes) -> ContainerSpec:
        reservation = ReservationFactory(
            host=engine_host, user=UserFactory(username=username), forward_port=free_port()
        )
        spec = container_spec(reservation=reservation, image=TEST_IMAGE, mounts=[])
        return replace(spec, command=["sleep", "3600"], **changes)

    return make


def test_a_container_runs_and_is_listed_as_it_was_started(runtime, make_spec):
    spec = make_spec()

    started = runtime.run(spec)

    assert started.id and started.name == spec.name and started.is_running
    assert spec.labels.items() <= started.labels.items()
    assert started.reservation_id == int(spec.labels[LABEL_RESERVATION])
    [listed] = runtime.list_managed()
    assert listed == started
    assert runtime.exit_code(started.id) is None  # still running


def test_a_stopped_container_stays_listed_with_the_exit_code_of_a_signal(runtime, make_spec):
    started = runtime.run(make_spec())

    runtime.stop(started.id, grace_s=2)
    runtime.stop(started.id, grace_s=2)  # twice is fine

    [stopped] = runtime.list_managed()
    assert (stopped.id, stopped.status, stopped.is_running) == (started.id, "exited", False)
    assert runtime.exit_code(started.id) in (128 + 15, 128 + 9)  # SIGTERM, or SIGKILL after the grace


def test_a_removed_container_is_gone_and_removing_it_again_is_no_error(runtime, make_spec):
    started = runtime.run(make_spec())

    runtime.remove(started.id)
    runtime.remove(started.id)

    assert runtime.list_managed() == []
    assert runtime.exit_code(started.id) is None
    assert b"".join(runtime.logs(started.id)) == b""
    runtime.stop(started.id, grace_s=1)  # stopping what is gone is no error either


@pytest.mark.parametrize("code", [0, 3])
def test_a_process_that_ends_leaves_its_exit_code_and_output(runtime, world, make_spec, code):
    output = b"epoch 1 done\n"
    spec = world.spec_exiting_with(make_spec(), code, output)
    started = runtime.run(spec)

    world.wait_for_exit(runtime, spec, code, output)

    [ended] = runtime.list_managed()
    assert (ended.id, ended.status) == (started.id, "exited")
    assert runtime.exit_code(started.id) == code
    assert b"".join(runtime.logs(started.id)) == output


def test_a_missing_image_is_reported_as_such(runtime, make_spec):
    with pytest.raises(ImageMissing):
        runtime.run(make_spec(image=MISSING_IMAGE))

    assert runtime.list_managed() == []


def test_a_name_in_use_is_refused_and_the_first_container_is_untouched(runtime, make_spec):
    spec = make_spec()
    first = runtime.run(spec)

    with pytest.raises(NameInUse):
        runtime.run(replace(spec, ssh_port=free_port()))

    assert [(state.id, state.is_running) for state in runtime.list_managed()] == [(first.id, True)]


def test_after_a_removal_the_same_name_runs_again_as_a_restart_does(runtime, make_spec):
    spec = make_spec()
    first = runtime.run(spec)
    runtime.stop(first.id, grace_s=1)
    runtime.remove(first.id)

    again = runtime.run(spec)

    assert again.id != first.id and again.name == spec.name and again.is_running
    assert [state.id for state in runtime.list_managed()] == [again.id]


def test_only_this_scope_and_this_host_are_listed(runtime, make_spec, engine_host, db):
    mine = runtime.run(make_spec())
    other_host = HostFactory(name=f"{engine_host.name}-other")
    on_other_host = make_spec("m11007s22")
    runtime.run(replace(on_other_host, labels={**on_other_host.labels, LABEL_HOST_ID: str(other_host.pk)}))
    in_other_scope = make_spec("m11007s23")
    foreign_scope = {**in_other_scope.labels, LABEL_MANAGED: f"{settings.CONTAINER_SCOPE}-foreign"}
    foreign = runtime.run(replace(in_other_scope, labels=foreign_scope))

    try:
        assert [state.id for state in runtime.list_managed()] == [mine.id]
    finally:
        runtime.remove(foreign.id)  # outside the scope, the docker_scope clean-up misses it
