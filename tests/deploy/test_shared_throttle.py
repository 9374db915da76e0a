"""The API's per-token limit holds across gunicorn's worker processes: the counts live in the
shared cache (the database table by default, Redis where CACHE_URL names it), not in each
worker's memory. About 30 s of real servers: runs where AIVC_MULTIPROCESS_TESTS=1 (CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from accounts.token_services import api_token_create
from tests.deploy.gunicorn_server import free_port, portal_under_gunicorn
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(
        not os.environ.get("AIVC_MULTIPROCESS_TESTS"), reason="set AIVC_MULTIPROCESS_TESTS=1 to run"
    ),
]

LIMIT = 10
# Each access line ends with the worker's pid (the format is extended by this test only).
ACCESS = re.compile(r'"GET /api/v1/profile/ HTTP/1.1" (?P<status>\d{3}) <(?P<pid>\d+)>$')


@contextmanager
def redis_server(tmp_path: Path):
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    port = free_port()
    server = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _served_by_worker(log: Path) -> list[tuple[int, str]]:
    return [
        (int(match["pid"]), match["status"])
        for line in log.read_text().splitlines()
        if (match := ACCESS.search(line))
    ]


def _hammer(base: str, token: str, log: Path) -> list[tuple[int, str]]:
    """Asks with one token until both workers have answered more than LIMIT times each, so
    each worker alone would have let LIMIT through if it counted for itself."""
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(400):
        assert requests.get(f"{base}/api/v1/profile/", headers=headers, timeout=10).status_code in (200, 429)
        served = _served_by_worker(log)
        per_worker = Counter(pid for pid, _ in served)
        if len(per_worker) == 2 and min(per_worker.values()) > LIMIT:
            return served
    pytest.fail(f"the requests did not reach both workers: {per_worker}")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cache", ["default", "redis", "locmem"])
def test_one_tokens_limit_holds_across_two_worker_processes(tmp_path, cache):
    user = UserFactory(username="scripted")
    _, token = api_token_create(user=user, name="laptop")
    environment = {"GUNICORN_WORKERS": "2", "API_THROTTLE_RATE": f"{LIMIT}/min"}
    log = tmp_path / "gunicorn.log"
    with redis_server(tmp_path) if cache == "redis" else _nothing() as redis_url:
        if redis_url:
            environment["CACHE_URL"] = redis_url
        if cache == "locmem":
            environment["CACHE_URL"] = "locmem://"
        access_format = '%({aivc.client}e)s "%(m)s %(U)s %(H)s" %(s)s %(p)s'
        with portal_under_gunicorn(log, "--access-logformat", access_format, **environment) as base:
            served = _hammer(base, token, log)

    let_through = sum(1 for _, status in served if status == "200")
    if cache == "locmem":
        # The old default: each worker counts for itself, so the token gets twice the limit.
        assert let_through == 2 * LIMIT
    else:
        assert let_through == LIMIT


@contextmanager
def _nothing():
    yield None
