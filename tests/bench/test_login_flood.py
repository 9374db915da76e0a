"""What a flood of wrong passwords costs everyone else: the dashboard's latency while 16
clients post bad logins as fast as they can, against the deployed web server (gunicorn
with deploy/gunicorn.conf.py, Argon2, PostgreSQL), with login throttling off (the old
portal) and on. Run with `make bench` on PostgreSQL; writes docs/benchmarks/login-flood.md."""

import os
import runpy
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection

from tests.bench.conftest import machine, summary
from tests.factories import UserFactory

pytestmark = [pytest.mark.bench, pytest.mark.argon2, pytest.mark.django_db(transaction=True)]
REPO = Path(__file__).resolve().parents[2]
ATTACKERS = 16
SAMPLES = 60
MAX_PHASE_S = 120  # a flooded server without throttling answers slowly; cap the phase
TARGET_P95_MS = 250  # the page stays usable: well under the 2.2 s measured without throttling


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn_shape() -> str:
    """Workers and threads as deploy/gunicorn.conf.py gives them on this machine."""
    config = runpy.run_path(str(REPO / "deploy/gunicorn.conf.py"))
    threads = "thread" if config["threads"] == 1 else "threads"
    return f"{config['workers']} workers x {config['threads']} {threads}"


def start_server(*, port: int, throttling: bool, log: Path) -> subprocess.Popen:
    database = connection.settings_dict
    environment = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "SECRET_KEY": django_settings.SECRET_KEY,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "LOGIN_THROTTLING": "1" if throttling else "0",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "aivc_portal.wsgi"],
        cwd=REPO,
        env=environment,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    for _ in range(100):
        try:
            requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=5)
            return server
        except requests.RequestException:
            time.sleep(0.2)
    server.terminate()
    pytest.fail(f"gunicorn did not start; see {log}")


def dashboard_latencies(base: str, session_key: str, count: int) -> list[float]:
    """`count` dashboard requests one after another, or as many as fit in MAX_PHASE_S."""
    reader = requests.Session()
    reader.cookies.set(django_settings.SESSION_COOKIE_NAME, session_key)
    samples = []
    deadline = time.monotonic() + MAX_PHASE_S
    while len(samples) < count and time.monotonic() < deadline:
        started = time.perf_counter()
        response = reader.get(f"{base}/", timeout=60)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        time.sleep(0.05)
    return samples


# The attackers run in a process of their own, so their threads never hold the measuring
# client's interpreter lock: the figures are the server's, not the benchmark's.
FLOOD = """
import re, sys, threading, requests
base, username, attackers = sys.argv[1], sys.argv[2], int(sys.argv[3])
token = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')

def attack():
    session = requests.Session()
    while True:
        try:
            page = session.get(base + "/accounts/login/", timeout=60)
            session.post(
                base + "/accounts/login/",
                {"username": username, "password": "wrong-guess",
                 "csrfmiddlewaretoken": token.search(page.text).group(1)},
                headers={"Referer": base + "/accounts/login/"},
                timeout=60,
            )
        except Exception:
            pass

threads = [threading.Thread(target=attack, daemon=True) for _ in range(attackers)]
for thread in threads:
    thread.start()
threads[0].join()
"""


def measure(tmp_path: Path, *, throttling: bool, victim, session_key: str) -> dict:
    from axes.models import AccessAttempt

    AccessAttempt.objects.all().delete()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port=port, throttling=throttling, log=tmp_path / f"gunicorn-{throttling}.log")
    try:
        idle = dashboard_latencies(base, session_key, SAMPLES)
        attackers = subprocess.Popen([sys.executable, "-c", FLOOD, base, victim.username, str(ATTACKERS)])
        try:
            time.sleep(2)  # let the flood reach full speed
            flooded = dashboard_latencies(base, session_key, SAMPLES)
        finally:
            attackers.kill()
            attackers.wait(timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)
    answered = (tmp_path / f"gunicorn-{throttling}.log").read_text().count('"POST /accounts/login/')
    return {"idle": summary(idle), "flood": summary(flooded), "attempts": answered}


def test_a_login_flood_does_not_slow_other_pages(tmp_path, write_figures, default_profile):
    if connection.vendor != "postgresql":
        pytest.skip("the flood benchmark runs against PostgreSQL (DATABASE_URL)")
    victim = UserFactory(username="victim", password="correct-horse-battery")
    reader = UserFactory(username="reader")
    session = SessionStore()
    session["_auth_user_id"] = str(reader.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = reader.get_session_auth_hash()
    session.create()

    results = {
        throttling: measure(tmp_path, throttling=throttling, victim=victim, session_key=session.session_key)
        for throttling in (True, False)
    }

    rows = "\n".join(
        f"| {'on' if on else 'off (old portal)'} | {r['idle']['p50']:.1f} | {r['idle']['p95']:.1f} | "
        f"{r['flood']['p50']:.1f} | {r['flood']['p95']:.1f} | {r['attempts']} |"
        for on, r in results.items()
    )
    write_figures(
        "login-flood.md",
        f"""# Login flood

The dashboard's latency (ms, {SAMPLES} requests one after another, 50 ms apart, or as many
as fit in 120 s) while
{ATTACKERS} clients post wrong passwords for one account from one address as fast as the
server answers, against gunicorn with `deploy/gunicorn.conf.py` ({gunicorn_shape()}),
Argon2 and PostgreSQL. `make bench`; {machine()}.

| throttling | idle p50 | idle p95 | flood p50 | flood p95 | bad logins answered |
|---|---|---|---|---|---|
{rows}

Target: flood p95 <= {TARGET_P95_MS} ms with throttling on (the test asserts only that
throttling at least halves the flood's p95, which holds on any machine). Once an account or address
is paused from an address, the authentication backend refuses before any hash is computed, so a locked
attempt costs a few queries instead of an Argon2 hash (~0.36 s of a core and 100 MiB).
Spraying many accounts from many addresses is bounded only after {django_settings.LOGIN_FAILURE_LIMIT}
tries per account and address pair (a busy address is slowed, never locked); docs/security.md
says why and what the proxy adds in front.
""",
    )
    # The absolute target depends on the machine (docs/benchmarks.md); what must hold
    # anywhere is that throttling at least halves what the flood does to other pages.
    assert results[True]["flood"]["p95"] * 2 <= results[False]["flood"]["p95"]
