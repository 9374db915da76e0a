"""Booking throughput through gunicorn, measured from outside (`make bench`).

A real gunicorn (deploy/gunicorn.conf.py) serves the portal on 127.0.0.1 against the test
database; 16 client threads, each logged in as its own student, POST the booking form as
fast as the server answers, each booking the next free half hour of its own, for a fixed
time. Then the stored rows are checked: every 302 is one stored booking and nothing is
oversold. Targets: >= 100 bookings/s and POST p95 <= 200 ms. The load only ever targets
127.0.0.1 and stops by itself after DURATION seconds.
"""

import http.client
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.utils import timezone

from bookings.models import Reservation
from bookings.timeslots import SLOT, slot_floor
from tests.bench.conftest import image_found_on, machine, summary
from tests.factories import CapabilityProfileFactory, HostFactory, ImageFactory, UserFactory

# The server checks the students' passwords with the production hasher.
pytestmark = [pytest.mark.bench, pytest.mark.argon2, pytest.mark.django_db(transaction=True)]

CLIENTS = int(os.environ.get("AIVC_BENCH_CLIENTS", "16"))
DURATION = float(os.environ.get("AIVC_BENCH_SECONDS", "20"))
WARM_UP = 2.0
PASSWORD = "bench-password-not-secret"
ROOT = Path(__file__).resolve().parents[2]
CSRF_FIELD = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(
    port: int, extra_env: dict[str, str], log_path: Path, *, cwd: Path = ROOT
) -> subprocess.Popen:
    """gunicorn serving the code in `cwd` (another revision's tree in a side-by-side run)."""
    settings = connection.settings_dict
    database_url = f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        # Without DEBUG the settings refuse a short or placeholder key: a fresh random one.
        "SECRET_KEY": secrets.token_urlsafe(50),
        **extra_env,
    }
    log = log_path.open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "aivc_portal.wsgi"],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    # The master accepts connections before a worker has booted, so wait for an HTTP answer.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            probe.request("GET", "/accounts/login/")
            probe.getresponse().read()
            return server
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
        finally:
            probe.close()
    server.terminate()
    server.wait(timeout=30)
    output = log_path.read_text(errors="replace")[-4000:]
    raise RuntimeError(f"gunicorn did not start (exit {server.returncode}); its output:\n{output}")


class Client:
    """One student with a keep-alive connection and a session cookie."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        data = None
        if body is not None:
            data = urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Referer"] = f"http://127.0.0.1:{self.http.port}{path}"
        try:
            self.http.request(method, path, body=data, headers=headers)
            response = self.http.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):
            # gunicorn closed an idle keep-alive connection: open a new one, once.
            self.http.close()
            self.http.request(method, path, body=data, headers=headers)
            response = self.http.getresponse()
        content = response.read()
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return response.status, content

    def log_in(self, username: str) -> None:
        _, page = self.request("GET", "/accounts/login/")
        token = CSRF_FIELD.search(page).group(1).decode()
        status, _ = self.request(
            "POST",
            "/accounts/login/",
            {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        assert status == 302, f"login of {username} answered {status}"
        _, page = self.request("GET", "/reservations/new/")
        self.token = CSRF_FIELD.search(page).group(1).decode()


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children (gunicorn's
    master and workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, ... utime and stime are the 12th and 13th.
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_load(
    port: int, usernames: list[str], *, host_id: int, image_id: int, first_slot, server_pid: int
) -> dict:
    clients = []
    for username in usernames:
        client = Client(port)
        client.log_in(username)
        clients.append(client)
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    start_line = threading.Barrier(len(clients) + 1)
    stop_at: list[float] = []
    refusals: list[bytes] = []
    posts = [0]

    def work(client: Client) -> None:
        start_line.wait()
        slot, mine = 0, []
        while time.monotonic() < stop_at[0]:
            start = timezone.localtime(first_slot + slot * SLOT)  # The form reads local times.
            slot += 1
            form = {
                "csrfmiddlewaretoken": client.token,
                "host": host_id,
                "start_date": f"{start:%Y-%m-%d}",
                "start_time": f"{start:%H:%M}",
                "end_kind": "duration",
                "duration": "",
                "cpus": "1",
                "memory_gb": "1",
                "gpu_count": "0",
                "image": image_id,
                "extra_command": "",
            }
            # The booking form's durations are whole days; book until the next half hour.
            end = start + SLOT
            form.update(end_kind="at", end_date=f"{end:%Y-%m-%d}", end_time=f"{end:%H:%M}")
            began = time.perf_counter()
            status, body = client.request("POST", "/reservations/new/", form)
            mine.append((time.monotonic(), time.perf_counter() - began, status))
            with lock:
                posts[0] += 1
            if status != 302 and not refusals:
                at = max(body.find(b"errorlist"), 0)
                refusals.append(f"{status} ".encode() + body[at : at + 600])
        with lock:
            for moment, latency, status in mine:
                if moment >= stop_at[1]:  # after the warm-up
                    latencies.append(latency)
                    statuses.append(status)

    threads = [threading.Thread(target=work, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    stop_at.extend([began + WARM_UP + DURATION, began + WARM_UP])
    # CPU over the whole run, warm-up included, against every POST sent in it: the server's
    # (gunicorn's processes) and the load generator's own (this process: only the client
    # threads run now), which shares the machine's cores with the server.
    server_cpu, client_cpu, wall = process_tree_cpu(server_pid), time.process_time(), time.monotonic()
    start_line.wait()
    for thread in threads:
        thread.join(timeout=DURATION + 120)
    server_cpu = process_tree_cpu(server_pid) - server_cpu
    client_cpu, wall = time.process_time() - client_cpu, time.monotonic() - wall
    return {
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "wall": wall,
        "posts": posts[0],
        "latencies": latencies,
        "booked": statuses.count(302),
        "other": len(statuses) - statuses.count(302),
        "seconds": DURATION,
        "first_refusal": refusals[0] if refusals else b"",
    }


def oversold(host) -> list[str]:
    """Independent of the booking code: at each booking's start, the sum of what is live."""
    live = Reservation.objects.live().filter(host=host)
    rows = list(live.values_list("start", "end", "cpus", "memory_gb", "user_id"))
    found = []
    for start, *_ in rows:
        holding = [row for row in rows if row[0] <= start < row[1]]
        if sum(row[2] for row in holding) > host.cpus or sum(row[3] for row in holding) > host.memory_gb:
            found.append(f"host over capacity at {start}")
        users = [row[4] for row in holding]
        if len(users) != len(set(users)):
            found.append(f"a user booked twice at {start}")
    return found


def test_booking_throughput_through_gunicorn(write_figures, tmp_path):
    assert connection.vendor == "postgresql", "run the benchmark on PostgreSQL (DATABASE_URL)"
    CapabilityProfileFactory(is_default=True, cpus=8, memory_gb=32, gpus=2)
    image = ImageFactory(is_default=True)
    host = HostFactory(name="bench-host", cpus=64, ram_gb=256, swap_gb=64, gpus=8)
    image_found_on(host=host, image=image, now=timezone.now())
    users = [UserFactory(username=f"load{n:02d}", password=PASSWORD) for n in range(CLIENTS)]
    first_slot = slot_floor(timezone.now()) + 2 * SLOT
    conn_max_age = os.environ.get("DB_CONN_MAX_AGE")
    port = free_port()
    server = start_gunicorn(port, {}, tmp_path / "gunicorn.log")
    try:
        result = run_load(
            port,
            [user.username for user in users],
            host_id=host.pk,
            image_id=image.pk,
            first_slot=first_slot,
            server_pid=server.pid,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    figures = summary(result["latencies"])
    rate = result["booked"] / result["seconds"]
    stored = Reservation.objects.filter(host=host).count()
    problems = oversold(host)
    lines = [
        "# Booking throughput through gunicorn",
        "",
        f"`make bench` (tests/bench/test_booking_throughput.py), PostgreSQL, {machine()}.",
        f"gunicorn with deploy/gunicorn.conf.py, DB_CONN_MAX_AGE={conn_max_age or 'default'}, "
        f"GUNICORN_WORKERS={os.environ.get('GUNICORN_WORKERS', 'default')}, "
        f"GUNICORN_THREADS={os.environ.get('GUNICORN_THREADS', 'default')};",
        f"{CLIENTS} clients on keep-alive connections POST the booking form for {DURATION:.0f} s",
        f"after a {WARM_UP:.0f} s warm-up; the redirect after a booking is not followed.",
        "",
        "| bookings/s | POST p50 (ms) | POST p95 (ms) | bookings | other answers | stored | oversold |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {rate:.1f} | {figures['p50'] * 1000:.1f} | {figures['p95'] * 1000:.1f} | {result['booked']} "
        f"| {result['other']} | {stored} | {len(problems)} |",
        "",
        f"CPU per POST over the whole run ({result['posts']} POSTs in {result['wall']:.1f} s): gunicorn "
        f"{result['server_cpu'] / result['posts'] * 1000:.1f} ms, the load generator "
        f"{result['client_cpu'] / result['posts'] * 1000:.1f} ms; the load generator used "
        f"{result['client_cpu'] / result['wall'] / (os.cpu_count() or 1):.0%} of the machine's CPU, "
        f"gunicorn {result['server_cpu'] / result['wall'] / (os.cpu_count() or 1):.0%} "
        "(PostgreSQL's share not counted).",
        "",
        "Targets: >= 100 bookings/s and POST p95 <= 200 ms at 16 clients, 0 oversold.",
        f"Load average after the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
    ]
    write_figures("throughput.md", "\n".join(lines))
    assert problems == []
    assert result["other"] == 0, f"every POST should have booked: {result['first_refusal']!r}"
    assert stored >= result["booked"]
