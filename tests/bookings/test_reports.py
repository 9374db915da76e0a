import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from bookings.reports import neutralise
from containers.models import Gpu
from tests.bookings.report_rows import named
from tests.containers.telemetry.helpers import minute_samples
from tests.factories import HostFactory, ImageFactory, ReservationFactory, UserFactory, local

RANGE = {"from": "2026-03-01", "to": "2026-03-31"}


def read_csv(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def staff(db):
    return UserFactory(username="staff01", is_staff=True)


@pytest.fixture
def known_data(db):
    """Alice: one run with 2 GPUs, one cancelled booking. Bob: one released early, one failed.
    One reservation on the last day (included), one the day after (not)."""
    host = HostFactory(name="gpu-01", gpus=2)
    gpu0, gpu1 = host.gpus.order_by("index")
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    image = ImageFactory(reference="lab/aivc-server:latest")
    ran = ReservationFactory(
        user=alice,
        host=host,
        image=image,
        start=local(2026, 3, 1, 10),
        end=local(2026, 3, 1, 14),
        cpus=Decimal(4),
        memory_gb=16,
        status="ended",
        gpus=[gpu0, gpu1],
        started_at=local(2026, 3, 1, 10),
        ended_at=local(2026, 3, 1, 14),
    )
    ReservationFactory(
        user=alice,
        host=host,
        image=image,
        start=local(2026, 3, 2, 9),
        end=local(2026, 3, 2, 12),
        cpus=Decimal(2),
        status="cancelled",
        cancelled_at=local(2026, 3, 1, 20),
        gpus=[gpu0],
    )
    ReservationFactory(
        user=bob,
        host=host,
        image=image,
        start=local(2026, 3, 3, 8),
        end=local(2026, 3, 3, 12),
        booked_end=local(2026, 3, 3, 20),
        cpus=Decimal("1.5"),
        status="ended",
        gpus=[gpu1],
        started_at=local(2026, 3, 3, 8),
        ended_at=local(2026, 3, 3, 12),
        released_at=local(2026, 3, 3, 12),
    )
    ReservationFactory(
        user=bob,
        host=host,
        image=image,
        start=local(2026, 3, 4, 8),
        end=local(2026, 3, 4, 9),
        status="failed",
    )
    ReservationFactory(
        user=bob,
        host=host,
        image=image,
        start=local(2026, 3, 31, 23, 30),
        end=local(2026, 4, 1, 1),
        status="scheduled",
    )
    ReservationFactory(
        user=alice, host=host, image=image, start=local(2026, 4, 1, 0), end=local(2026, 4, 1, 2)
    )
    return ran


@pytest.mark.django_db
def test_the_reservations_csv_has_a_row_per_reservation_with_its_figures(client, staff, known_data):
    client.force_login(staff)
    response = client.get(reverse("report-reservations-csv"), RANGE)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="aivc-reservations_2026-03-01_2026-03-31.csv"' in response["Content-Disposition"]
    rows = read_csv(response)
    assert [row["user"] for row in rows] == ["alice", "alice", "bob", "bob", "bob"]
    ran, cancelled, released, failed, last_day = rows
    assert (ran["kind"], ran["start"]) == ("booking", "2026-03-01T10:00:00+08:00")
    assert ran["gpu_indices"] == "0 1"
    assert (ran["gpu_count"], ran["cpus"], ran["memory_gb"]) == ("2", "4.00", "16")
    assert (ran["hours_booked"], ran["gpu_hours_booked"]) == ("4.00", "8.00")
    assert (ran["hours_run"], ran["gpu_hours_run"]) == ("4.00", "8.00")
    assert ran["image"] == "lab/aivc-server:latest"
    assert (cancelled["end_reason"], cancelled["hours_given_back"]) == ("cancelled", "3.00")
    assert cancelled["hours_run"] == "0.00"
    assert released["end_reason"] == "released early"
    assert (released["hours_booked"], released["hours_run"], released["hours_given_back"]) == (
        "12.00",
        "4.00",
        "8.00",
    )
    assert failed["status"] == "failed"
    assert last_day["start"] == "2026-03-31T23:30:00+08:00"


@pytest.mark.django_db
def test_the_usage_csv_has_a_row_per_user_with_totals(client, staff, known_data):
    client.force_login(staff)
    response = client.get(reverse("report-usage-csv"), RANGE)
    assert 'filename="aivc-usage_2026-03-01_2026-03-31.csv"' in response["Content-Disposition"]
    alice, bob = read_csv(response)
    assert alice == {
        "user": "alice",
        "kind": "booking",
        "reservations": "2",
        "hours_booked": "7.00",
        "hours_held": "4.00",  # the cancelled booking held nothing
        "hours_run": "4.00",
        "gpu_hours_booked": "11.00",
        "gpu_hours_held": "8.00",
        "gpu_hours_run": "8.00",
        "gpu_hours_busy": "0.00",
        "cpu_hours_held": "16.00",
        "cpu_hours_run": "16.00",
        "cancelled": "1",
        "released_early": "0",
        "stopped_by_maintainer": "0",
        "released_idle": "0",
        "finished": "0",
        "blocked_or_failed": "0",
        "hours_given_back": "3.00",
    }
    assert (bob["reservations"], bob["blocked_or_failed"], bob["released_early"]) == ("3", "1", "1")
    assert (bob["gpu_hours_booked"], bob["gpu_hours_run"], bob["hours_given_back"]) == (
        "12.00",
        "4.00",
        "8.00",
    )
    # The failed and the upcoming reservations never ran: booked and held, not run.
    assert (bob["hours_booked"], bob["hours_held"], bob["hours_run"]) == ("14.50", "6.50", "4.00")
    assert bob["cpu_hours_run"] == "6.00"


@pytest.mark.django_db
def test_the_default_report_range_includes_upcoming_bookings(client, staff):
    client.force_login(staff)
    page = client.get(reverse("reports"))
    today = timezone.localdate()
    assert page.context["range"].first == today.replace(day=1)
    assert page.context["range"].last == today + timedelta(days=14)


@pytest.mark.django_db
def test_cells_that_a_spreadsheet_would_run_are_neutralised(client, staff):
    user = UserFactory(username="@mallory")
    ReservationFactory(
        user=user,
        start=local(2026, 3, 5, 10),
        end=local(2026, 3, 5, 11),
        extra_command='=HYPERLINK("http://evil")',
        image=ImageFactory(reference="+evil:latest"),
    )
    client.force_login(staff)
    [row] = read_csv(client.get(reverse("report-reservations-csv"), RANGE))
    assert row["user"] == "'@mallory"
    assert row["extra_command"] == '\'=HYPERLINK("http://evil")'
    assert row["image"] == "'+evil:latest"
    [usage] = read_csv(client.get(reverse("report-usage-csv"), RANGE))
    assert usage["user"] == "'@mallory"


def test_neutralise_covers_each_formula_start():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert neutralise(f"{start}1") == f"'{start}1"
    assert neutralise("python train.py") == "python train.py"
    assert neutralise("") == ""


@pytest.mark.django_db
def test_the_bom_option_starts_the_file_with_a_byte_order_mark(client, staff, known_data):
    client.force_login(staff)
    plain = b"".join(client.get(reverse("report-usage-csv"), RANGE).streaming_content)
    excel = b"".join(client.get(reverse("report-usage-csv"), {**RANGE, "bom": "1"}).streaming_content)
    assert plain.startswith(b"user,")
    assert excel.startswith(b"\xef\xbb\xbfuser,")


@pytest.mark.django_db
def test_the_export_makes_the_same_queries_for_few_or_many_rows(client, staff):
    host = HostFactory(name="gpu-01", gpus=1)
    client.force_login(staff)
    counts = []
    for hour in (10, 12):
        for day in range(1, 11):
            ReservationFactory(
                host=host,
                start=local(2026, 3, day, hour),
                end=local(2026, 3, day, hour + 1),
                gpus=[host.gpus.get()],
            )
        with CaptureQueriesContext(connection) as queries:
            rows = read_csv(client.get(reverse("report-reservations-csv"), RANGE))
        counts.append((len(rows), len(queries)))
    assert [rows for rows, _ in counts] == [10, 20]
    assert counts[0][1] == counts[1][1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "Enter a date."),
        ({"from": "2026-03-01"}, "Enter a date."),
        ({"from": "01/03/2026", "to": "2026-03-31"}, "Enter a date as YYYY-MM-DD."),
        ({"from": "2026-02-30", "to": "2026-03-31"}, "Enter a date as YYYY-MM-DD."),
        ({"from": "2026-03-31", "to": "2026-03-01"}, "The end date is before the start date."),
        ({"from": "2000-01-01", "to": "2026-03-01"}, "A report covers at most 1096 days."),
    ],
)
@pytest.mark.parametrize("name", ["report-reservations-csv", "report-usage-csv", "reports"])
def test_a_bad_range_gets_a_clear_message(client, staff, query, message, name):
    client.force_login(staff)
    response = client.get(reverse(name), query)
    if name == "reports" and not query:
        assert response.status_code == 200  # the page itself, with this month filled in
        return
    assert response.status_code == 400
    assert message in response.content.decode()


@pytest.mark.django_db
def test_the_reports_page_links_both_downloads_for_the_range(client, staff):
    client.force_login(staff)
    response = client.get(reverse("reports"), RANGE)
    assert response.status_code == 200
    page = response.content.decode()
    assert f"{reverse('report-reservations-csv')}?from=2026-03-01&amp;to=2026-03-31" in page
    assert f"{reverse('report-usage-csv')}?from=2026-03-01&amp;to=2026-03-31&amp;bom=1" in page


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["reports", "report-reservations-csv", "report-usage-csv"])
def test_students_are_refused_and_anonymous_users_sent_to_login(client, student, name):
    response = client.get(reverse(name), RANGE)
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    client.force_login(student)
    assert client.get(reverse(name), RANGE).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["reports", "report-reservations-csv", "report-usage-csv"])
def test_staff_who_are_not_superusers_may_read_reports_but_not_post(client, staff, name):
    client.force_login(staff)
    assert not staff.is_superuser
    assert client.get(reverse(name), RANGE).status_code == 200
    assert client.post(reverse(name), RANGE).status_code == 405


@pytest.mark.django_db
def test_the_usage_csv_counts_gpu_hours_the_samples_show_busy(client, staff, known_data):
    gpu0 = Gpu.objects.get(host__name="gpu-01", index=0)
    minute_samples(gpu0, local(2026, 3, 1, 10), local(2026, 3, 1, 11), utilisation=80)
    minute_samples(gpu0, local(2026, 3, 1, 11), local(2026, 3, 1, 12), utilisation=1)
    client.force_login(staff)
    alice, bob = read_csv(client.get(reverse("report-usage-csv"), RANGE))
    assert (alice["gpu_hours_busy"], bob["gpu_hours_busy"]) == ("1.00", "0.00")


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["reports", "report-reservations-csv", "report-usage-csv"])
@pytest.mark.parametrize("first, last", [("9999-12-31", "9999-12-31"), ("0001-01-01", "0001-01-02")])
def test_dates_at_the_ends_of_the_calendar_get_a_clear_message(client, staff, name, first, last):
    client.force_login(staff)
    response = client.get(reverse(name), {"from": first, "to": last})
    assert response.status_code == 400
    assert "Choose dates between" in response.content.decode()


@pytest.mark.parametrize(
    ("cell", "defused"),
    [
        ("a;=1+1", "a;'=1+1"),
        ("x\t=1+1", "x\t'=1+1"),
        ("x\r\n@SUM(A1)", "x\r\n'@SUM(A1)"),
        ("ok, -2+3", "ok, '-2+3"),
        ("  =1+1", "'  =1+1"),
        ("\t=1+1", "'\t'=1+1"),
        ("python train.py --lr 0.1", "python train.py --lr 0.1"),
        ("a=b+c", "a=b+c"),
    ],
)
def test_neutralise_catches_formula_starts_after_whitespace_and_separators(cell, defused):
    assert neutralise(cell) == defused


@pytest.mark.django_db
def test_figures_of_a_running_and_an_early_released_reservation():
    from bookings.reports import ReportRange, reservation_rows

    host = HostFactory(name="gpu-02", gpus=2)
    running = ReservationFactory(
        host=host,
        start=local(2026, 3, 5, 10),
        end=local(2026, 3, 5, 14),
        status="running",
        gpus=list(host.gpus.all()),
        started_at=local(2026, 3, 5, 10, 30),
    )
    released = ReservationFactory(
        host=host,
        start=local(2026, 3, 6, 10),
        end=local(2026, 3, 6, 11),
        booked_end=local(2026, 3, 6, 12),
        status="ended",
        released_at=local(2026, 3, 6, 9),  # before its start: all of it given back
    )
    now = local(2026, 3, 5, 12)  # two hours into the running one's window
    march = ReportRange(first=local(2026, 3, 1).date(), last=local(2026, 3, 31).date())
    rows = {row[0]: named(row) for row in reservation_rows(report_range=march, now=now)}
    assert (rows[running.pk]["hours_run"], rows[running.pk]["gpu_hours_run"]) == ("1.50", "3.00")
    assert rows[running.pk]["end_reason"] == ""
    assert rows[released.pk]["hours_booked"] == "2.00"
    assert rows[released.pk]["hours_given_back"] == "2.00"
    assert rows[released.pk]["end_reason"] == "released early"
    later = {row[0]: named(row) for row in reservation_rows(report_range=march, now=local(2026, 3, 9))}
    assert later[running.pk]["hours_run"] == "3.50"  # capped at the end
