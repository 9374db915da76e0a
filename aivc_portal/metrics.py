"""/metrics: the portal's state in the Prometheus text format (docs/monitoring.md).

Every figure is read from the database at each scrape by one collector, never counted in
the process: gunicorn runs several workers, and a counter kept in one of them would be
a different number at each scrape. The two histograms are rebuilt from the stored rows of
the last RECENT period, so they are a window, not counters: take quantiles of their
buckets as they are (histogram_quantile without rate()).

Who may read it: loopback, the networks in METRICS_ALLOWED_ADDRESSES, or a request bearing
METRICS_TOKEN. The address is the portal's one client-address rule (behind the TLS proxy,
the address nginx saw), so a request through nginx is never taken for a loopback one."""

from __future__ import annotations

import hmac
import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from accounts.throttling import client_ip
from bookings.selectors import booking_counts_by_status, booking_start_delays
from containers.agent_selectors import serving_health
from containers.inventory_selectors import Health
from containers.telemetry.selectors import fresh_gpu_samples
from jobs.selectors import job_counts_by_status, job_waits

# The period the histograms cover.
RECENT = timedelta(hours=24)
MIB = 1024 * 1024
# Upper bounds, in seconds. A container normally starts within a tick or two of its window
# (a minute each); a job waits from seconds to days.
START_DELAY_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600)
JOB_WAIT_BUCKETS = (10, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 3 * 86400)


def histogram(
    name: str, documentation: str, values: Iterable[timedelta], bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    seconds = sorted(value.total_seconds() for value in values)
    buckets = [(floatToGoString(bound), bisect_right(seconds, bound)) for bound in bounds]
    buckets.append(("+Inf", len(seconds)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=sum(seconds))


def portal_metrics(*, now: datetime) -> Iterator[Metric]:
    reservations = GaugeMetricFamily(
        "aivc_reservations", "Bookings (not batch jobs) in each status.", labels=["status"]
    )
    for status, count in booking_counts_by_status().items():
        reservations.add_metric([status], count)
    yield reservations

    jobs = GaugeMetricFamily("aivc_jobs", "Batch jobs in each status.", labels=["status"])
    for status, count in job_counts_by_status().items():
        jobs.add_metric([status], count)
    yield jobs

    agent_up = GaugeMetricFamily(
        "aivc_agent_up",
        "1 while the host's agent (or, for a host without one, the central scheduler) is online.",
        labels=["host"],
    )
    for host_name, health in serving_health(now=now).items():
        agent_up.add_metric([host_name], 1 if health == Health.ONLINE else 0)
    yield agent_up

    utilisation = GaugeMetricFamily(
        "aivc_gpu_utilization_ratio",
        "GPU utilisation (0-1) in the latest fresh sample.",
        labels=["host", "gpu"],
    )
    memory = GaugeMetricFamily(
        "aivc_gpu_memory_used_bytes", "GPU memory in use in the latest fresh sample.", labels=["host", "gpu"]
    )
    for sample in fresh_gpu_samples(now=now):
        labels = [sample.host_name, str(sample.index)]
        if sample.utilisation_percent is not None:
            utilisation.add_metric(labels, sample.utilisation_percent / 100)
        memory.add_metric(labels, sample.memory_used_mb * MIB)
    yield utilisation
    yield memory

    yield histogram(
        "aivc_container_start_delay_seconds",
        "From a booking's window opening to its container running, for containers started in the last 24 h.",
        booking_start_delays(since=now - RECENT),
        START_DELAY_BUCKETS,
    )
    yield histogram(
        "aivc_job_wait_seconds",
        "From a job's submission to its start, for jobs started in the last 24 h.",
        job_waits(since=now - RECENT),
        JOB_WAIT_BUCKETS,
    )


class PortalCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        return portal_metrics(now=timezone.now())


# auto_describe off: registering must not read the database (it runs at import).
REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(PortalCollector())


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip in network for network in settings.METRICS_ALLOWED_ADDRESSES)


def _token_matches(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


def metrics_allowed(request: HttpRequest) -> bool:
    return _address_allowed(client_ip(request)) or _token_matches(request)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        # 403, not 404: a scraper set up wrongly should say so, and the path is no secret.
        return HttpResponse(
            "Metrics are open to loopback, METRICS_ALLOWED_ADDRESSES and METRICS_TOKEN only.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    try:
        body = generate_latest(REGISTRY)
    except DatabaseError:
        return HttpResponse("The database does not answer.\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
