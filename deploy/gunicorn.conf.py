"""gunicorn settings for the portal: `gunicorn -c deploy/gunicorn.conf.py aivc_portal.wsgi`."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# A request is mostly Python (CPU), so processes, not threads, serve requests side by side:
# two threads in one worker take turns on its interpreter lock, which doubled the booking
# POST's p95 at 16 clients (docs/benchmarks/throughput.md).
workers = int(os.environ.get("GUNICORN_WORKERS", min(8, multiprocessing.cpu_count() * 2)))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# gthread even with one thread: its main thread keeps telling the master it is alive while
# a request runs, so `timeout` does not kill a long CSV or log download half way, as it
# would with the sync worker (which gunicorn picks for one thread by default).
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
errorlog = "-"
# Query strings are left out of the access log: report ranges are harmless, but nothing that
# a form might carry should end up in a log file.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
