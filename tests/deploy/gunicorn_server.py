"""A real gunicorn with deploy/gunicorn.conf.py serving the portal against the test database,
for tests about what only several processes show (shared counts, the access log)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def url_of_the_test_database() -> str:
    """The URL of the database this test runs on (the test database, not the developer's)."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{database['NAME']}"
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    where = f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
    return f"postgres://{credentials}@{where}/{database['NAME']}"


@contextmanager
def portal_under_gunicorn(log: Path, *arguments: str, **environment: str) -> Iterator[str]:
    """Starts the portal under gunicorn; yields its base URL. Output (both logs) goes to `log`."""
    port = free_port()
    base = {key: value for key, value in os.environ.items() if key not in ("CACHE_URL", "REDIS_URL")}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", *arguments, "aivc_portal.wsgi"],
        cwd=REPO,
        env={
            **base,
            "DEBUG": "0",
            "DATABASE_URL": url_of_the_test_database(),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "STATICFILES_STORAGE": "django.contrib.staticfiles.storage.StaticFilesStorage",
            **environment,
        },
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
