"""/metrics: the Prometheus text format, read from the database, for whom it is open."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from bookings.models import Reservation
from containers.models import HostAgent
from containers.telemetry.models import GpuSample
from jobs.models import Job
from tests.factories import GpuFactory, HostFactory, JobFactory, ReservationFactory

TOKEN = "t" * 8 + "0123456789abcdefghijklmnopqrstuv"


def _samples(response) -> dict[tuple[str, tuple], float]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


@pytest.fixture
def lab(db):
    now = timezone.now()
    gpu1 = HostFactory(name="gpu1", served_by_agent=True)
    HostAgent.objects.create(host=gpu1, last_seen_at=now)
    gpu2 = HostFactory(name="gpu2", served_by_agent=True)
    HostAgent.objects.create(host=gpu2, last_seen_at=now - timedelta(hours=1))
    first, second = GpuFactory(host=gpu1, index=0), GpuFactory(host=gpu1, index=1)
    GpuSample.objects.create(
        gpu=first, taken_at=now - timedelta(minutes=5), utilisation_percent=10, memory_used_mb=1
    )
    GpuSample.objects.create(
        gpu=first, taken_at=now - timedelta(seconds=30), utilisation_percent=75, memory_used_mb=2048
    )
    # Too old to be the GPU's current figures: the sampler has stopped.
    GpuSample.objects.create(
        gpu=second, taken_at=now - timedelta(hours=1), utilisation_percent=99, memory_used_mb=9
    )
    started = ReservationFactory(
        host=gpu1,
        status=Reservation.Status.RUNNING,
        start=now - timedelta(minutes=10),
        end=now + timedelta(hours=1),
        started_at=now - timedelta(minutes=9),
    )
    ReservationFactory(
        host=gpu1,
        status=Reservation.Status.SCHEDULED,
        start=now + timedelta(hours=2),
        end=now + timedelta(hours=3),
    )
    Reservation.objects.filter(pk=started.pk).update(created_at=now - timedelta(days=1))
    JobFactory(status=Job.Status.QUEUED)
    JobFactory(
        status=Job.Status.RUNNING,
        submitted_at=now - timedelta(minutes=20),
        started_at=now - timedelta(minutes=15),
    )
    return started


def test_it_reports_reservations_jobs_agents_and_gpus_from_the_database(client, lab):
    samples = _samples(client.get("/metrics", REMOTE_ADDR="127.0.0.1"))

    assert samples[("aivc_reservations", (("status", "running"),))] == 1
    assert samples[("aivc_reservations", (("status", "scheduled"),))] == 1
    assert samples[("aivc_reservations", (("status", "cancelled"),))] == 0
    assert samples[("aivc_jobs", (("status", "queued"),))] == 1
    assert samples[("aivc_jobs", (("status", "running"),))] == 1
    assert samples[("aivc_agent_up", (("host", "gpu1"),))] == 1
    assert samples[("aivc_agent_up", (("host", "gpu2"),))] == 0
    gpu = (("gpu", "0"), ("host", "gpu1"))
    assert samples[("aivc_gpu_utilization_ratio", gpu)] == 0.75
    assert samples[("aivc_gpu_memory_used_bytes", gpu)] == 2048 * 1024 * 1024
    assert ("aivc_gpu_utilization_ratio", (("gpu", "1"), ("host", "gpu1"))) not in samples


def test_the_histograms_hold_recent_start_delays_and_job_waits(client, lab):
    samples = _samples(client.get("/metrics", REMOTE_ADDR="127.0.0.1"))

    # The booking's container ran 60 s after its window opened.
    assert samples[("aivc_container_start_delay_seconds_bucket", (("le", "30.0"),))] == 0
    assert samples[("aivc_container_start_delay_seconds_bucket", (("le", "60.0"),))] == 1
    assert samples[("aivc_container_start_delay_seconds_count", ())] == 1
    assert samples[("aivc_container_start_delay_seconds_sum", ())] == pytest.approx(60, abs=1)
    # The job waited five minutes.
    assert samples[("aivc_job_wait_seconds_bucket", (("le", "60.0"),))] == 0
    assert samples[("aivc_job_wait_seconds_bucket", (("le", "300.0"),))] == 1
    assert samples[("aivc_job_wait_seconds_count", ())] == 1


def test_a_booking_made_for_now_counts_from_when_it_was_made(db):
    from bookings.selectors import booking_start_delays

    now = timezone.now()
    booking = ReservationFactory(start=now - timedelta(minutes=25), started_at=now)
    Reservation.objects.filter(pk=booking.pk).update(created_at=now - timedelta(seconds=40))

    assert booking_start_delays(since=now - timedelta(hours=1)) == [timedelta(seconds=40)]


def test_each_scrape_reads_the_database_again(client, lab):
    before = _samples(client.get("/metrics", REMOTE_ADDR="127.0.0.1"))
    JobFactory(status=Job.Status.QUEUED)
    after = _samples(client.get("/metrics", REMOTE_ADDR="127.0.0.1"))
    key = ("aivc_jobs", (("status", "queued"),))
    assert (before[key], after[key]) == (1, 2)


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_it_is_open_to_loopback(client, address):
    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200


@pytest.mark.django_db
def test_it_refuses_other_addresses_unless_a_setting_names_them(client, settings):
    settings.METRICS_ALLOWED_ADDRESSES = ()
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403

    import ipaddress

    settings.METRICS_ALLOWED_ADDRESSES = (ipaddress.ip_network("192.0.2.0/24"),)
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="198.51.100.7").status_code == 403


@pytest.mark.django_db
def test_a_bearer_token_opens_it_from_anywhere_and_a_wrong_one_does_not(client, settings):
    settings.METRICS_TOKEN = TOKEN
    outside = {"REMOTE_ADDR": "198.51.100.7"}
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **outside).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN[:-1]}x", **outside).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}", **outside).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ", **outside).status_code == 403


@pytest.mark.django_db
def test_without_a_token_setting_no_bearer_opens_it(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer ", REMOTE_ADDR="198.51.100.7")
    assert response.status_code == 403


@pytest.mark.django_db
def test_behind_the_proxy_a_request_through_nginx_is_not_loopback(client, settings):
    # nginx connects from 127.0.0.1 and appends the client's address; a client writing
    # 127.0.0.1 into the header itself gets it placed before its real address.
    settings.BEHIND_TLS_PROXY = True
    through_nginx = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "127.0.0.1, 203.0.113.9"}
    assert client.get("/metrics", **through_nginx).status_code == 403
    # A scraper on the server itself, straight to gunicorn, has no forwarded address.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


@pytest.mark.django_db
def test_a_loopback_scrape_is_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


def test_a_short_metrics_token_stops_start_up(monkeypatch):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import aivc_portal.settings"],
        env={**__import__("os").environ, "METRICS_TOKEN": "short"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "METRICS_TOKEN" in result.stderr


def test_a_wrong_network_stops_start_up():
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import aivc_portal.settings"],
        env={**os.environ, "METRICS_ALLOWED_ADDRESSES": "10.0.0.0/8, lab-net"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "METRICS_ALLOWED_ADDRESSES='lab-net'" in result.stderr
