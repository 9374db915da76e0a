"""deploy/gunicorn.conf.py as production runs it: a real gunicorn master and worker."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.deploy.slow_stream_app import PIECES, STREAM_SECONDS

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_download_longer_than_the_worker_timeout_arrives_whole(tmp_path):
    # A CSV of a few years of a lab streams for longer than gunicorn's timeout; the sync
    # worker (gunicorn's pick for one thread) would be killed by the master half way.
    port = _free_port()
    environment = {
        **os.environ,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_TIMEOUT": "1",
    }
    log = tmp_path / "gunicorn.log"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "deploy/gunicorn.conf.py",
            "tests.deploy.slow_stream_app:app",
        ],
        cwd=REPO,
        env=environment,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        response = requests.get(f"http://127.0.0.1:{port}/", timeout=STREAM_SECONDS + 10)
        body = b"".join(response.iter_content(chunk_size=None)).decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert body.splitlines() == [f"piece {piece}" for piece in range(PIECES)], log.read_text()
