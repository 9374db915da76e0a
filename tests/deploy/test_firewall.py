"""deploy/firewall/aivc-containers.nft applied in network namespaces of the test's own (a GPU
server between a container, the lab's LAN with the database, and the internet): what a
student's container would try (the database port, the LAN, the server itself) is dropped,
the internet and a student's SSH into the container pass. Needs root, `ip` and `nft`."""

import os
import shutil
import subprocess
import uuid

import pytest

from tests.deploy.gunicorn_server import REPO

RULES = REPO / "deploy" / "firewall" / "aivc-containers.nft"
LISTENER = (
    "import socket,sys,threading\n"
    "def serve(port):\n"
    " s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    " s.bind(('0.0.0.0', port)); s.listen()\n"
    " while True: s.accept()[0].close()\n"
    "for p in sys.argv[1:]: threading.Thread(target=serve, args=(int(p),), daemon=True).start()\n"
    "threading.Event().wait()\n"
)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def lab_network():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        pytest.skip("needs root, iproute2 and nftables (CI installs nftables)")
    tag = uuid.uuid4().hex[:5]
    names = {role: f"aivc{role}{tag}" for role in ("gw", "ctr", "lan", "wan")}
    try:
        for name in names.values():
            _run("ip", "netns", "add", name)
    except subprocess.CalledProcessError as error:
        pytest.skip(f"cannot make network namespaces here: {error.stderr.decode().strip()}")
    gw = names["gw"]
    links = {"ctr": ("172.30.0.1/16", "172.30.0.2/16"), "lan": ("10.9.0.1/24", "10.9.0.10/24"),
             "wan": ("198.51.100.1/24", "198.51.100.10/24")}  # fmt: skip
    servers = []
    try:
        for role, (inside_gw, outside) in links.items():
            here, there = f"g{role}{tag}", f"o{role}{tag}"
            _run(
                "ip",
                "link",
                "add",
                here,
                "netns",
                gw,
                "type",
                "veth",
                "peer",
                "name",
                there,
                "netns",
                names[role],
            )
            _run("ip", "-n", gw, "addr", "add", inside_gw, "dev", here)
            _run("ip", "-n", gw, "link", "set", here, "up")
            _run("ip", "-n", names[role], "addr", "add", outside, "dev", there)
            _run("ip", "-n", names[role], "link", "set", there, "up")
            _run("ip", "-n", names[role], "route", "add", "default", "via", inside_gw.split("/")[0])
        _run("ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for role, ports in (
            ("lan", ["5432", "8080"]),
            ("wan", ["8080", "5432"]),
            ("gw", ["8080"]),
            ("ctr", ["2222"]),
        ):
            servers.append(
                subprocess.Popen(["ip", "netns", "exec", names[role], "python3", "-c", LISTENER, *ports])
            )
        yield names
    finally:
        for server in servers:
            server.kill()
            server.wait()
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _reaches(names: dict, source: str, address: str, port: int) -> bool:
    probe = f"import socket; socket.create_connection(('{address}', {port}), timeout=0.5).close()"
    for _ in range(20):  # the listeners take a moment to start
        result = subprocess.run(
            ["ip", "netns", "exec", names[source], "python3", "-c", probe], capture_output=True
        )
        if result.returncode == 0:
            return True
        if b"timed out" in result.stderr:
            return False
        subprocess.run(["sleep", "0.1"])
    return False


def test_containers_cannot_reach_the_database_the_lan_or_the_server(lab_network, tmp_path):
    names = lab_network
    # Without the rules the server forwards everything: the attack works.
    assert _reaches(names, "ctr", "10.9.0.10", 5432)
    rules = RULES.read_text()
    rules = rules.replace("define AIVC_DATABASE = 192.0.2.10", "define AIVC_DATABASE = 10.9.0.10")
    (tmp_path / "rules.nft").write_text(rules)
    _run("ip", "netns", "exec", names["gw"], "nft", "-f", str(tmp_path / "rules.nft"))

    assert not _reaches(names, "ctr", "10.9.0.10", 5432)  # the database
    assert not _reaches(names, "ctr", "10.9.0.10", 8080)  # anything else on the LAN
    assert not _reaches(names, "ctr", "198.51.100.10", 5432)  # a database port anywhere
    assert not _reaches(names, "ctr", "172.30.0.1", 8080)  # the server itself
    assert _reaches(names, "ctr", "198.51.100.10", 8080)  # the internet (pip, datasets)
    assert _reaches(names, "lan", "172.30.0.2", 2222)  # a student's SSH into the container
