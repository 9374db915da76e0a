"""gunicorn settings for the portal: `gunicorn -c deploy/gunicorn.conf.py aivc_portal.wsgi`."""

import multiprocessing
import os
import sys
from pathlib import Path

# The config is read before gunicorn puts the working directory on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aivc_portal.envfile import load_env_file
from aivc_portal.logs import LOG_FORMATS, gunicorn_logging

# The service's env file (AIVC_ENV_FILE, default /etc/aivc-portal/env) before any setting
# below reads the environment: GUNICORN_BIND, LOG_FORMAT and the rest may live there.
load_env_file()

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# A request is mostly Python (CPU), so processes, not threads, serve requests side by side:
# two threads in one worker take turns on its interpreter lock, which doubled the booking
# POST's p95 at 16 clients (docs/benchmarks/throughput.md).
workers = int(os.environ.get("GUNICORN_WORKERS", min(8, multiprocessing.cpu_count() * 2)))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# With one thread gunicorn runs its sync worker: a busy worker takes no new connection, so
# a long CSV download never queues other requests behind it. That worker is silent to the
# master while it serves, and the master kills one silent for `timeout`: 300 s lets a
# report of tens of millions of rows through (a million take 7-10 s) and still ends a hung
# request. (gthread would not kill long downloads, but queues requests behind them.)
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = 30
max_requests = 2000
max_requests_jitter = 200
# Both logs in the portal's format (aivc_portal/logs.py): UTC ISO 8601 times, or JSON with
# LOG_FORMAT=json; access lines on stdout, the rest on stderr.
_log_format = os.environ.get("LOG_FORMAT", "").strip().lower() or "plain"
if _log_format not in LOG_FORMATS:
    raise SystemExit(f"LOG_FORMAT={_log_format!r} is not one of {', '.join(LOG_FORMATS)}.")
logconfig_dict = gunicorn_logging(_log_format)
# The client is the portal's own answer (behind nginx, the address nginx saw, as the login
# throttle takes it) and the user once authenticated; the portal's middleware puts both
# into the request's environ. A request that never reached the portal shows "-".
# Query strings are left out: report ranges are harmless, but nothing that a form might
# carry should end up in a log file.
access_log_format = (
    '%({aivc.client}e)s %({aivc.user}e)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss %({aivc.request_id}e)s'
)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicornc's control socket: under the web unit's RuntimeDirectory (/run/aivc-portal).
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
