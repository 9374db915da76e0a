"""Container hardening on the real engine: what `docker inspect` shows, that one tenant's
container cannot reach another's ports, and that sshd (privilege separation included)
still takes a key login under exactly this HostConfig."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from bookings.models import Reservation
from containers.models import ContainerEvent
from containers.runtime import DockerRuntime
from containers.tasks import reconcile
from tests.factories import ImageFactory, ReservationFactory, UserFactory
from tests.images import SSHD_IMAGE

pytestmark = pytest.mark.docker
WEB_PORT = 8888


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tenant(**fields):
    """An account whose ssh port no other test on this shared engine is using."""
    return UserFactory(forward_port=free_port(), **fields)


def start(*, user, host, image, window, extra_command="sleep 3600") -> Reservation:
    reservation = ReservationFactory(
        user=user, host=host, image=image, extra_command=extra_command, memory_gb=1, **window
    )
    reconcile(wake=False)
    reservation.refresh_from_db()
    events = list(ContainerEvent.objects.values_list("message", flat=True))
    assert reservation.status == Reservation.Status.RUNNING, events
    return reservation


def address(docker_client, reservation: Reservation) -> str:
    networks = docker_client.containers.get(reservation.container_id).attrs["NetworkSettings"]["Networks"]
    return networks[django_settings.CONTAINER_NETWORK]["IPAddress"]


def test_networks_made_twice_at_once_become_one_and_the_launch_goes_on(
    engine_host, window, docker_scope, test_image, default_profile, docker_client
):
    # The engine accepts two networks of one name, as two launches racing to make it do;
    # a launch by name then fails with "network ... is ambiguous".
    for _ in range(2):
        docker_client.networks.create(
            django_settings.CONTAINER_NETWORK,
            driver="bridge",
            options={"com.docker.network.bridge.enable_icc": "false"},
            labels={"aivc.purpose": "tenant-isolation"},
        )
    start(user=tenant(), host=engine_host, image=test_image, window=window)
    named = [
        network
        for network in docker_client.networks.list(names=[django_settings.CONTAINER_NETWORK])
        if network.name == django_settings.CONTAINER_NETWORK
    ]
    assert len(named) == 1


def test_the_container_runs_fenced_in(
    engine_host, window, docker_scope, test_image, default_profile, docker_client
):
    reservation = start(user=tenant(), host=engine_host, image=test_image, window=window)
    host_config = docker_client.containers.get(reservation.container_id).attrs["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]
    assert sorted(host_config["CapAdd"]) == sorted(django_settings.CONTAINER_CAP_ADD)
    assert not {"CAP_NET_RAW", "NET_RAW", "MKNOD", "SYS_ADMIN"} & set(host_config["CapAdd"])
    assert host_config["SecurityOpt"] == ["no-new-privileges:true"]
    assert host_config["PidsLimit"] == 4096
    ulimits = {limit["Name"]: (limit["Soft"], limit["Hard"]) for limit in host_config["Ulimits"]}
    assert ulimits == {"nofile": (16384, 16384), "nproc": (4096, 4096)}
    assert host_config["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert docker_client.networks.get(host_config["NetworkMode"]).name == django_settings.CONTAINER_NETWORK
    assert host_config["PortBindings"]["22/tcp"][0]["HostPort"] == str(reservation.forward_port)
    network = docker_client.networks.get(django_settings.CONTAINER_NETWORK)
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    # Inside: the bounding set is the short list, and no process can gain privileges.
    status = docker_client.containers.get(reservation.container_id).exec_run(["cat", "/proc/1/status"])
    fields = dict(line.split(":\t", 1) for line in status.output.decode().splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapBnd"], 16) == sum(
        1 << CAPABILITY_BITS[name] for name in django_settings.CONTAINER_CAP_ADD
    )


CAPABILITY_BITS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "FOWNER": 3,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "NET_BIND_SERVICE": 10,
    "SYS_CHROOT": 18,
    "AUDIT_WRITE": 29,
}


def test_one_tenants_container_cannot_reach_anothers_ports(
    engine_host, window, docker_scope, test_image, default_profile, docker_client, roots
):
    victim = tenant()
    (roots["work"] / victim.username).mkdir(mode=0o700)
    (roots["work"] / victim.username / "index.html").write_text("victim's notebook")
    serving = start(
        user=victim,
        host=engine_host,
        image=test_image,
        window=window,
        extra_command=f"busybox httpd -f -p {WEB_PORT} -h /root/Work",
    )
    attacker = start(user=tenant(), host=engine_host, image=test_image, window=window)
    url = f"http://{address(docker_client, serving)}:{WEB_PORT}/index.html"

    # The server answers (from the host), so a refusal below is the network's doing.
    for _ in range(50):
        try:
            assert urllib.request.urlopen(url, timeout=2).read() == b"victim's notebook"
            break
        except OSError:
            time.sleep(0.1)
    else:
        pytest.fail(f"the victim's web server never answered at {url}")
    target = f"{address(docker_client, serving)} {WEB_PORT}"
    request = f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {target}"
    # The same probe works from inside a fenced-in container (the victim's own) ...
    control = docker_client.containers.get(serving.container_id).exec_run(["sh", "-c", request])
    assert b"victim's notebook" in control.output, control.output
    # ... and gets nothing from the other tenant's.
    probe = docker_client.containers.get(attacker.container_id).exec_run(["sh", "-c", request])
    assert b"notebook" not in probe.output


def test_an_existing_network_that_lets_containers_talk_is_refused(
    engine_host, window, docker_scope, test_image, default_profile, docker_client, settings
):
    docker_client.networks.create(settings.CONTAINER_NETWORK, driver="bridge")
    reservation = ReservationFactory(user=tenant(), host=engine_host, image=test_image, memory_gb=1, **window)
    reconcile(wake=False)
    reservation.refresh_from_db()
    assert reservation.status != Reservation.Status.RUNNING
    assert not reservation.container_id
    assert ContainerEvent.objects.filter(message__contains="lets containers reach each other").exists()


def test_launch_threads_of_one_agent_make_one_network(engine_host, docker_scope, docker_client, settings):
    runtime = DockerRuntime(engine_host)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: runtime._ensure_network(settings.CONTAINER_NETWORK), range(8)))
    made = docker_client.networks.list(names=[settings.CONTAINER_NETWORK])
    assert len([n for n in made if n.name == settings.CONTAINER_NETWORK]) == 1


def test_each_relaxation_reaches_the_engine(
    engine_host, window, docker_scope, test_image, default_profile, docker_client, settings
):
    settings.CONTAINER_NETWORK = ""
    settings.CONTAINER_NO_NEW_PRIVILEGES = False
    settings.CONTAINER_PIDS_LIMIT = 0
    settings.CONTAINER_CAP_ADD = ["CHOWN", "NET_RAW"]
    reservation = start(user=tenant(), host=engine_host, image=test_image, window=window)
    host_config = docker_client.containers.get(reservation.container_id).attrs["HostConfig"]
    assert host_config["NetworkMode"] in ("default", "bridge")
    assert not host_config["SecurityOpt"]
    assert not host_config["PidsLimit"]
    assert sorted(host_config["CapAdd"]) == ["CHOWN", "NET_RAW"]


@pytest.fixture
def sshd_image(db, docker_client):
    try:
        docker_client.images.get(SSHD_IMAGE)
    except Exception:
        message = f"The sshd test image {SSHD_IMAGE} is missing; build it with deploy/test-engine/setup.sh."
        if os.environ.get("AIVC_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return ImageFactory(reference=SSHD_IMAGE)


def test_sshd_takes_a_key_login_with_privilege_separation_under_this_host_config(
    engine_host, window, docker_scope, sshd_image, default_profile, docker_client, tmp_path
):
    key = tmp_path / "student"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    port = free_port()
    user = UserFactory(ssh_public_keys=key.with_name("student.pub").read_text().strip(), forward_port=port)
    reservation = start(user=user, host=engine_host, image=sshd_image, window=window, extra_command="")
    command = [
        "ssh",
        *("-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"),
        *("-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'known'}"),
        *("-o", "ConnectTimeout=3", "root@127.0.0.1"),
        "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
    ]
    for _ in range(40):
        login = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if login.returncode == 0:
            break
        time.sleep(0.5)
    logs = docker_client.containers.get(reservation.container_id).logs().decode(errors="replace")
    assert login.returncode == 0, f"{login.stderr}\n--- sshd ---\n{logs}"
    assert login.stdout.splitlines()[0] == "0"
    assert "NoNewPrivs:\t1" in login.stdout
    # The pre-authentication child ran as the unprivileged sshd user in its chroot.
    assert "chroot" not in logs.lower() and "setgroups" not in logs.lower(), logs
    attrs = docker_client.containers.get(reservation.container_id).attrs
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
    Path(tmp_path / "inspect.json").write_text(json.dumps(attrs["HostConfig"], indent=1))
