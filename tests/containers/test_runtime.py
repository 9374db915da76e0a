from decimal import Decimal

import pytest

from containers.fake_runtime import FakeRuntime
from containers.runtime import DockerRuntime, PortInUse, get_runtime
from containers.specs import SecurityOptions, container_command, container_spec, memory_split
from tests.factories import HostFactory, ImageFactory, ReservationFactory


@pytest.mark.parametrize(
    ("ram", "swap", "booked", "expected"),
    [
        (64, 16, 10, (8, 10, 2)),  # 10 * 0.8 is exactly 8, not 9
        (64, 16, 9, (8, 9, 1)),  # ceil(7.2)
        (64, 0, 9, (9, 9, 0)),
        (100, 50, 1, (1, 1, 0)),
    ],
)
def test_memory_is_split_into_ram_swap_and_shm(db, ram, swap, booked, expected):
    split = memory_split(memory_gb=booked, host=HostFactory(ram_gb=ram, swap_gb=swap))
    assert (split.memory_gb, split.memory_swap_gb, split.shm_gb) == expected


def test_the_command_is_an_argument_list_never_a_shell_string(db, default_profile):
    reservation = ReservationFactory(
        image=ImageFactory(start_command="/.script/start.sh --quiet"),
        extra_command="python train.py --name 'my run' ; rm -rf /",
        cpus=Decimal("1"),
    )
    assert container_command(reservation) == [
        "/.script/start.sh",
        "--quiet",
        "python",
        "train.py",
        "--name",
        "my run",
        ";",
        "rm",
        "-rf",
        "/",
    ]


def test_no_commands_means_the_images_own(db, default_profile):
    assert container_command(ReservationFactory(extra_command="")) is None


def test_get_runtime_follows_the_setting(db, settings):
    host = HostFactory()
    settings.CONTAINER_RUNTIME = "containers.fake_runtime.FakeRuntime"
    assert isinstance(get_runtime(host), FakeRuntime)
    settings.CONTAINER_RUNTIME = "containers.runtime.DockerRuntime"
    assert isinstance(get_runtime(host), DockerRuntime)
    settings.CONTAINER_RUNTIME = "containers.runtime.NoSuchRuntime"
    with pytest.raises(ImportError):
        get_runtime(host)


def test_every_spec_is_fenced_in_as_the_settings_say(db, default_profile, settings, fake_runtime):
    settings.CONTAINER_CAP_ADD = ["CHOWN", "SETUID"]
    settings.CONTAINER_PIDS_LIMIT = 512
    settings.CONTAINER_NETWORK = "lab-isolated"
    reservation = ReservationFactory()
    spec = container_spec(reservation=reservation, image="img:1", mounts=[])
    assert spec.security == SecurityOptions(
        cap_add=("CHOWN", "SETUID"),
        no_new_privileges=True,
        pids_limit=512,
        nofile=16384,
        nproc=4096,
        log_max_size="10m",
        log_max_files=3,
        network="lab-isolated",
    )
    get_runtime(reservation.host).run(spec)
    engine = fake_runtime.engine_for(reservation.host)
    assert engine.runs[-1].security.network == "lab-isolated"
    assert engine.networks == {"lab-isolated"}


@pytest.mark.parametrize(
    "answer",
    [
        "driver failed programming external connectivity on endpoint aivc-ann (3f2a): "
        "Bind for 0.0.0.0:10007 failed: port is already allocated",
        "driver failed programming external connectivity on endpoint aivc-ann (3f2a): "
        "Error starting userland proxy: listen tcp4 0.0.0.0:10007: bind: address already in use",
    ],
)
def test_a_port_in_use_is_the_launch_s_problem_not_an_engine_that_does_not_answer(db, answer):
    import docker
    import requests

    response = requests.Response()
    response.status_code = 500
    error = docker.errors.APIError("500 Server Error", response=response, explanation=answer)

    problem = DockerRuntime(HostFactory(name="gpu-07"))._translate(error)

    assert isinstance(problem, PortInUse)
    assert str(problem) == "port 10007 of gpu-07 is in use by another program"
