"""The lab image's entrypoint modes, run straight on the engine (deploy/images, built by
`make lab-image`): job mode needs no host keys and returns the command's exit code; lab
mode serves JupyterLab under the base URL with the token from the mounted file, which
never shows in `docker inspect` or the container's log; and the build script, with no
engine answering, says so and starts none."""

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.containers.conftest import docker_client  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
LAB_READY_S = 60


@pytest.fixture
def lab_reference(docker_client, settings):  # noqa: F811
    try:
        docker_client.images.get(settings.LAB_IMAGE)
    except Exception:
        message = f"The lab image {settings.LAB_IMAGE} is missing; build it with `make lab-image`."
        if os.environ.get("AIVC_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return settings.LAB_IMAGE


@pytest.fixture
def containers(docker_client):  # noqa: F811
    started = []
    yield started
    for container in started:
        container.remove(force=True)


def _host_keys(folder: Path) -> dict[str, dict]:
    volumes = {}
    for kind, name in (("ed25519", "ssh_host_ed25519_key"), ("ecdsa", "ssh_host_ecdsa_key")):
        key = folder / name
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True)
        volumes[str(key)] = {"bind": f"/etc/ssh/{name}", "mode": "ro"}
    return volumes


@pytest.mark.docker
def test_job_mode_runs_the_command_as_the_main_process_without_host_keys(
    docker_client,  # noqa: F811
    lab_reference,
    containers,
):
    container = docker_client.containers.run(
        lab_reference,
        ["sh", "-c", "echo from-the-job; exit 3"],
        environment={"AIVC_MODE": "job"},
        name=f"aivct-lab-{uuid.uuid4().hex[:8]}",
        detach=True,
    )
    containers.append(container)
    assert container.wait(timeout=60)["StatusCode"] == 3
    assert container.logs().decode().strip() == "from-the-job"


@pytest.mark.docker
def test_an_unknown_mode_stops_with_a_message(docker_client, lab_reference, containers):  # noqa: F811
    container = docker_client.containers.run(
        lab_reference,
        environment={"AIVC_MODE": "root-shell"},
        name=f"aivct-lab-{uuid.uuid4().hex[:8]}",
        detach=True,
    )
    containers.append(container)
    assert container.wait(timeout=60)["StatusCode"] == 78
    assert "unknown AIVC_MODE" in container.logs().decode()


@pytest.mark.docker
def test_lab_mode_serves_jupyterlab_with_the_mounted_token_only(
    docker_client,  # noqa: F811
    lab_reference,
    containers,
    tmp_path,
):
    token = uuid.uuid4().hex
    token_folder = tmp_path / "jupyter"
    token_folder.mkdir()
    (token_folder / "token").write_text(token + "\n")
    volumes = {str(token_folder): {"bind": "/run/aivc/jupyter", "mode": "ro"}, **_host_keys(tmp_path)}
    container = docker_client.containers.run(
        lab_reference,
        environment={"AIVC_MODE": "lab", "AIVC_LAB_BASE_URL": "/r/42/lab/"},
        volumes=volumes,
        name=f"aivct-lab-{uuid.uuid4().hex[:8]}",
        detach=True,
    )
    containers.append(container)
    container.reload()
    address = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    status_url = f"http://{address}:8888/r/42/lab/api/status"
    deadline = time.monotonic() + LAB_READY_S
    answer = None
    while time.monotonic() < deadline:
        try:
            answer = requests.get(status_url, headers={"Authorization": f"token {token}"}, timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(0.5)
    assert answer is not None, container.logs().decode()
    assert answer.status_code == 200
    assert requests.get(status_url, timeout=5).status_code == 403
    assert requests.get(status_url, headers={"Authorization": "token wrong"}, timeout=5).status_code == 403
    # sshd still runs beside it: the booking stays reachable by ssh.
    assert "sshd" in container.top()["Processes"][0][-1]
    container.reload()
    assert token not in str(container.attrs)
    assert token not in container.logs().decode()


def test_the_build_script_names_the_missing_engine_and_starts_none(tmp_path):
    built = subprocess.run(
        [str(REPO / "deploy/images/build-lab-image.sh")],
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 69
    assert f"no Docker engine answers at unix://{tmp_path}/no-engine.sock" in built.stderr
    assert "never starts one" in built.stderr
    assert built.stdout == ""
