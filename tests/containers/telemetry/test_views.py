import re
from datetime import timedelta

import pytest
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from bookings.models import Reservation
from containers import gpus, tasks
from containers.models import HostAgent
from containers.telemetry.models import GpuSample, ReservationGpuStatus
from containers.telemetry.selectors import gpu_table, idle_reservations_for_user, reservation_gpu_usage
from tests.factories import GpuFactory, HostFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = reverse("gpu-status")
GAP = re.compile(r'<li data-reason="(\w+)"><strong>([^<]+)</strong>')


@pytest.fixture
def logged_in(client, student):
    client.force_login(student)
    return client


def test_it_asks_an_anonymous_visitor_to_log_in(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_refuses_a_post(logged_in):
    assert logged_in.post(URL).status_code == 405


def test_it_says_gpu_information_is_unavailable_without_samples(logged_in, host):
    response = logged_in.get(URL)

    assert response.status_code == 200
    assert "GPU information unavailable" in response.content.decode()


def test_it_shows_utilisation_memory_and_holder(logged_in, host):
    gpu0 = host.gpus.get(index=0)
    ReservationFactory(
        host=host,
        user=UserFactory(username="m11007s06"),
        status=Reservation.Status.RUNNING,
        start=timezone.now() - timedelta(hours=1),
        end=timezone.now() + timedelta(hours=1),
        gpus=[gpu0],
    )
    GpuSample.objects.create(
        gpu=gpu0, taken_at=timezone.now(), utilisation_percent=37, memory_used_mb=6144, process_count=1
    )

    page = logged_in.get(URL).content.decode()

    assert "37%" in page
    assert "6144 / 24576 MiB" in page
    assert "m11007s06" in page
    assert "GPU information unavailable" not in page


def test_with_the_real_library_and_no_driver_sampling_stores_nothing_and_the_page_renders(logged_in, host):
    if gpus.probe().available:
        pytest.skip("this machine has a working NVIDIA driver")

    assert tasks.sample_gpus() == 0
    assert tasks.sync_gpu_inventory() == 0

    response = logged_in.get(URL)
    assert response.status_code == 200
    assert "GPU information unavailable" in response.content.decode()
    assert list(host.gpus.values_list("is_active", flat=True)) == [True, True]


def test_the_reservation_usage_tag_lays_out_the_usage_it_is_handed_without_a_query(
    host, student, django_assert_num_queries
):
    gpu0 = host.gpus.get(index=0)
    reservation = ReservationFactory(host=host, user=student, gpus=[gpu0])
    GpuSample.objects.create(
        gpu=gpu0, taken_at=reservation.start, utilisation_percent=42, memory_used_mb=2048
    )
    usage = reservation_gpu_usage(reservation=reservation)

    with django_assert_num_queries(0):
        html = Template("{% load gpu_telemetry %}{% reservation_gpu_usage usage %}").render(
            Context({"usage": usage})
        )

    assert "Mean GPU utilisation 42%, peak memory 2048 MiB." in html


def test_the_idle_notice_tag_tells_the_user_about_their_idle_reservation_without_a_query(
    host, student, django_assert_num_queries
):
    reservation = ReservationFactory(host=host, user=student, status=Reservation.Status.RUNNING)
    ReservationGpuStatus.objects.create(reservation=reservation, idle_flagged_at=timezone.now())
    idle = list(idle_reservations_for_user(user_id=student.pk))

    with django_assert_num_queries(0):
        html = Template("{% load gpu_telemetry %}{% idle_reservations_notice idle %}").render(
            Context({"idle": idle})
        )

    assert "The GPUs of your reservation on gpu-01 have been idle since" in html


def test_the_gpu_table_tag_lays_out_the_table_without_a_query(host, django_assert_num_queries):
    table = gpu_table(now=timezone.now())

    with django_assert_num_queries(0):
        html = Template("{% load gpu_telemetry %}{% gpu_table table %}").render(Context({"table": table}))

    assert "GPU information unavailable" in html


def test_the_dashboard_shows_the_idle_notice_and_the_gpu_table(host, student, client):
    reservation = ReservationFactory(host=host, user=student, status=Reservation.Status.RUNNING)
    ReservationGpuStatus.objects.create(reservation=reservation, idle_flagged_at=timezone.now())
    client.force_login(student)

    page = client.get(reverse("dashboard")).content.decode()

    assert "The GPUs of your reservation on gpu-01 have been idle since" in page
    assert "GPU information unavailable" in page


def test_the_gpu_page_says_why_each_host_has_no_reading(logged_in, host):
    now = timezone.now()
    quiet = HostFactory(name="gpu-quiet", served_by_agent=True)
    GpuFactory(host=quiet, index=0)
    HostAgent.objects.create(host=quiet, last_seen_at=now - timedelta(hours=2), nvml_driver="550.54")
    driverless = HostFactory(name="gpu-nodriver", served_by_agent=True)
    HostAgent.objects.create(host=driverless, last_seen_at=now, nvml_driver="")
    HostFactory(name="cpu-only")
    sampled = HostFactory(name="gpu-sampled")
    gpu = GpuFactory(host=sampled, index=0)
    GpuSample.objects.create(gpu=gpu, taken_at=now - timedelta(seconds=30), memory_used_mb=10)

    page = logged_in.get(URL).content.decode()

    reasons = {name: reason for reason, name in GAP.findall(page)}
    assert reasons == {
        "gpu-quiet": "agent_offline",
        "gpu-nodriver": "no_driver",
        "cpu-only": "no_gpus",
        host.name: "no_sample",
    }
    assert "its agent is offline" in page and "no NVIDIA driver (NVML)" in page
