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


def _serve_slow_stream(tmp_path: Path, **environment: str) -> str:
    """Starts gunicorn with the portal's config on the slow stream app; returns the body
    one request got (what arrived before the connection ended)."""
    port = _free_port()
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
        env={**os.environ, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1", **environment},
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
        try:
            response = requests.get(f"http://127.0.0.1:{port}/", timeout=STREAM_SECONDS + 10, stream=True)
            return b"".join(response.iter_content(chunk_size=None)).decode()
        except requests.exceptions.RequestException:
            return ""  # cut off half way
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_download_within_the_timeout_arrives_whole_and_one_past_it_is_cut(tmp_path):
    # The timeout is what bounds a download (the sync worker is silent while it serves),
    # so it must be long enough for the reports; GUNICORN_TIMEOUT sets it.
    whole = [f"piece {piece}" for piece in range(PIECES)]
    assert _serve_slow_stream(tmp_path, GUNICORN_TIMEOUT=str(int(STREAM_SECONDS) + 5)).splitlines() == whole
    assert _serve_slow_stream(tmp_path, GUNICORN_TIMEOUT="1").splitlines() != whole


def test_the_default_timeout_lets_a_report_of_millions_of_rows_through():
    environment = {key: value for key, value in os.environ.items() if key != "GUNICORN_TIMEOUT"}
    config = subprocess.run(
        [sys.executable, "-c", "import runpy; print(runpy.run_path('deploy/gunicorn.conf.py')['timeout'])"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    # A million rows stream in 7-10 s on the lab machine (docs/benchmarks/reports.md).
    assert int(config.stdout) >= 300
