"""The usage page's selectors (exact numbers on a small constructed lab), its views and
each chart's CSV."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from bookings.usage import (
    UsageFilter,
    gpu_occupancy,
    occupancy_buckets,
    top_users,
    weekly_hours,
    weekly_totals,
)
from containers.telemetry.selectors import gpu_hours_busy_by_user_week
from jobs.selectors import job_waits_by_week
from tests.containers.telemetry.helpers import minute_samples
from tests.factories import (
    CapabilityProfileFactory,
    HostFactory,
    JobFactory,
    ReservationFactory,
    UserFactory,
    local,
)

# Monday 2026-03-02 to Sunday 2026-03-15: two weeks.
MARCH = UsageFilter(first=local(2026, 3, 2).date(), last=local(2026, 3, 15).date())
QUERY = {"from": "2026-03-02", "to": "2026-03-15"}
NOW = local(2026, 3, 20, 12)


def read_csv(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def lab(db, settings):
    """gpu-01 (2 GPUs), gpu-02 (1 GPU). Alice: 2 GPUs for 4 h in week 1, ran 3 h, busy
    2 h of GPU time; 1 GPU for 10 h on gpu-02 in week 2, released after 2 h. Bob: a CPU
    booking in week 1 and 1 GPU for 5 h in week 2; on the research profile."""
    settings.GPU_IDLE_UTILISATION_PERCENT = 10
    research = CapabilityProfileFactory(name="research")
    one, two = HostFactory(name="gpu-01", gpus=2), HostFactory(name="gpu-02", gpus=1)
    gpu0, gpu1 = one.gpus.order_by("index")
    [gpu2] = two.gpus.all()
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob", capability_profile=research)
    ReservationFactory(
        user=alice,
        host=one,
        start=local(2026, 3, 3, 10),
        end=local(2026, 3, 3, 14),
        status="ended",
        gpus=[gpu0, gpu1],
        started_at=local(2026, 3, 3, 10),
        ended_at=local(2026, 3, 3, 13),
    )
    minute_samples(gpu0, local(2026, 3, 3, 10), local(2026, 3, 3, 11), utilisation=90)
    minute_samples(gpu1, local(2026, 3, 3, 10), local(2026, 3, 3, 11), utilisation=90)
    minute_samples(gpu0, local(2026, 3, 3, 11), local(2026, 3, 3, 12), utilisation=0)
    ReservationFactory(
        user=alice,
        host=two,
        start=local(2026, 3, 10, 20),
        end=local(2026, 3, 10, 22),
        booked_end=local(2026, 3, 11, 6),
        released_at=local(2026, 3, 10, 22),
        status="ended",
        gpus=[gpu2],
        started_at=local(2026, 3, 10, 20),
        ended_at=local(2026, 3, 10, 22),
    )
    ReservationFactory(
        user=bob,
        host=one,
        start=local(2026, 3, 4, 8),
        end=local(2026, 3, 4, 10),
        cpus=Decimal(4),
        status="ended",
    )
    ReservationFactory(
        user=bob,
        host=one,
        start=local(2026, 3, 12, 22),
        end=local(2026, 3, 13, 3),
        status="ended",
        gpus=[gpu1],
        started_at=local(2026, 3, 12, 22),
        ended_at=local(2026, 3, 13, 3),
    )
    # Outside the range: the week after.
    ReservationFactory(
        user=bob, host=one, start=local(2026, 3, 16, 8), end=local(2026, 3, 16, 9), gpus=[gpu0]
    )
    for submitted, waited in ((3, 1), (3, 3), (4, 2), (10, 6)):
        JobFactory(
            user=bob,
            submitted_at=local(2026, 3, submitted, 8),
            started_at=local(2026, 3, submitted, 8 + waited),
            status="succeeded",
        )
    JobFactory(user=alice, submitted_at=local(2026, 3, 5, 8), status="queued")  # never started
    return {"alice": alice, "bob": bob, "gpu-01": one, "gpu-02": two, "research": research}


def test_weekly_hours_sum_held_run_and_busy_per_user_and_week(lab):
    busy = gpu_hours_busy_by_user_week(MARCH)
    weeks = weekly_hours(MARCH, now=NOW, busy=busy)
    figures = [
        (
            w.week.isoformat(),
            w.username,
            w.hours_held,
            w.hours_run,
            w.gpu_hours_held,
            w.gpu_hours_run,
            w.gpu_hours_busy,
        )
        for w in weeks
    ]
    assert figures == [
        ("2026-03-02", "alice", 4.0, 3.0, 8.0, 6.0, 2.0),
        ("2026-03-02", "bob", 2.0, 0.0, 0.0, 0.0, 0.0),
        ("2026-03-09", "alice", 2.0, 2.0, 2.0, 2.0, 0.0),  # 10 h booked, 8 given back
        ("2026-03-09", "bob", 5.0, 5.0, 5.0, 5.0, 0.0),
    ]
    totals = weekly_totals(weeks)
    assert [(t.week.isoformat(), t.gpu_hours_held, t.gpu_hours_run, t.gpu_hours_busy) for t in totals] == [
        ("2026-03-02", 8.0, 6.0, 2.0),
        ("2026-03-09", 7.0, 7.0, 0.0),
    ]


def test_filters_narrow_to_a_host_a_profile_or_a_user(lab):
    on_two = UsageFilter(first=MARCH.first, last=MARCH.last, host_id=lab["gpu-02"].pk)
    assert [(w.username, w.gpu_hours_held) for w in weekly_hours(on_two, now=NOW)] == [("alice", 2.0)]
    research = UsageFilter(first=MARCH.first, last=MARCH.last, profile_id=lab["research"].pk)
    assert {w.username for w in weekly_hours(research, now=NOW)} == {"bob"}
    alice = UsageFilter(first=MARCH.first, last=MARCH.last, user_id=lab["alice"].pk)
    assert {w.username for w in weekly_hours(alice, now=NOW)} == {"alice"}


def test_the_default_profile_filter_includes_users_without_a_profile(lab):
    default = CapabilityProfileFactory(name="standard", is_default=True)
    chosen = UsageFilter(first=MARCH.first, last=MARCH.last, profile_id=default.pk)
    assert {w.username for w in weekly_hours(chosen, now=NOW)} == {"alice"}


def test_top_users_rank_by_gpu_hours_run(lab):
    assert [
        (t.username, t.gpu_hours_run, t.gpu_hours_held, t.reservations)
        for t in top_users(weekly_hours(MARCH, now=NOW))
    ] == [
        ("alice", 8.0, 10.0, 2),
        ("bob", 5.0, 5.0, 2),
    ]


def test_occupancy_cuts_each_hold_at_midnight_and_counts_it_per_gpu_and_day(lab):
    occupancy = gpu_occupancy(MARCH)
    assert len(occupancy.buckets) == 14
    rows = {row.label: row.hours for row in occupancy.rows}
    assert set(rows) == {"gpu-01 GPU 0", "gpu-01 GPU 1", "gpu-02 GPU 0"}
    assert rows["gpu-01 GPU 0"][1] == pytest.approx(4.0)  # Tuesday 3rd
    assert sum(rows["gpu-01 GPU 0"]) == pytest.approx(4.0)  # the 16th is outside
    # Bob's 22:00-03:00 hold: 2 h on the 12th, 3 h on the 13th.
    assert rows["gpu-01 GPU 1"][10] == pytest.approx(2.0)
    assert rows["gpu-01 GPU 1"][11] == pytest.approx(3.0)
    assert rows["gpu-02 GPU 0"][8] == pytest.approx(2.0)
    assert occupancy.share(next(r for r in occupancy.rows if r.label == "gpu-01 GPU 0"), 1) == pytest.approx(
        4 / 24
    )


def test_a_long_range_has_a_column_per_week(db):
    year = UsageFilter(first=local(2026, 1, 1).date(), last=local(2026, 12, 31).date())
    buckets = occupancy_buckets(year)
    assert len(buckets) == 53
    assert buckets[-1].end == local(2027, 1, 1)


def test_job_waits_give_the_median_and_95th_percentile_per_week(lab):
    waits = job_waits_by_week(MARCH)
    assert [(w.week.isoformat(), w.jobs) for w in waits] == [("2026-03-02", 3), ("2026-03-09", 1)]
    first, second = waits
    assert first.median_hours == pytest.approx(2.0)
    assert first.p95_hours == pytest.approx(2.9)  # between 2 and 3, as percentile_cont interpolates
    assert (second.median_hours, second.p95_hours) == pytest.approx((6.0, 6.0))


# Views ------------------------------------------------------------------------------


@pytest.fixture
def staff(db):
    return UserFactory(username="staff01", is_staff=True)


def test_staff_see_every_chart(client, staff, lab):
    client.force_login(staff)
    page = client.get(reverse("usage"), QUERY)
    assert page.status_code == 200
    body = page.content.decode()
    for chart in ("chart-weekly", "chart-occupancy", "chart-top-users", "chart-waits"):
        assert f'data-testid="{chart}"' in body
    assert body.count("<svg") == 4
    assert "alice" in body and "bob" in body  # top users


def test_a_student_sees_only_their_own_hours(client, lab):
    client.force_login(lab["alice"])
    page = client.get(reverse("usage"), QUERY)
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-testid="chart-occupancy"' not in body and 'data-testid="chart-top-users"' not in body
    assert {w.username for w in page.context["weeks"]} == {"alice"}
    assert "profile" not in page.context["form"].fields


def test_the_default_range_is_the_last_twelve_weeks(client, staff):
    client.force_login(staff)
    page = client.get(reverse("usage"))
    assert page.status_code == 200
    form = page.context["form"]
    assert form.cleaned_data["from"].weekday() == 0
    assert (form.cleaned_data["to"] - form.cleaned_data["from"]).days < 12 * 7


def test_anonymous_visitors_go_to_the_login_page(client, db):
    for url in (reverse("usage"), reverse("usage-chart-csv", args=["weekly"])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_the_usage_page_refuses_a_post(client, staff):
    client.force_login(staff)
    assert client.post(reverse("usage")).status_code == 405
    assert client.post(reverse("usage-chart-csv", args=["weekly"])).status_code == 405


def test_a_bad_range_answers_400_with_the_form(client, staff):
    client.force_login(staff)
    response = client.get(reverse("usage"), {"from": "2026-03-15", "to": "2026-03-01"})
    assert response.status_code == 400
    assert b"The end date is before the start date." in response.content
    assert client.get(reverse("usage-chart-csv", args=["weekly"]), {"from": "x"}).status_code == 400


def test_each_chart_downloads_its_numbers_for_the_same_selection(client, staff, lab):
    client.force_login(staff)
    weekly = read_csv(client.get(reverse("usage-chart-csv", args=["weekly"]), QUERY))
    assert weekly[0] == {
        "week": "2026-03-02",
        "user": "alice",
        "hours_held": "4.00",
        "hours_run": "3.00",
        "gpu_hours_held": "8.00",
        "gpu_hours_run": "6.00",
        "gpu_hours_busy": "2.00",
    }
    on_two = read_csv(
        client.get(reverse("usage-chart-csv", args=["weekly"]), {**QUERY, "host": lab["gpu-02"].pk})
    )
    assert [row["user"] for row in on_two] == ["alice"]
    occupancy = read_csv(client.get(reverse("usage-chart-csv", args=["occupancy"]), QUERY))
    assert len(occupancy) == 3 * 14
    assert occupancy[1] == {
        "host": "gpu-01",
        "gpu_index": "0",
        "from": "2026-03-03T00:00:00+08:00",
        "to": "2026-03-04T00:00:00+08:00",
        "hours_held": "4.00",
        "share_held": "0.1667",
    }
    waits = read_csv(client.get(reverse("usage-chart-csv", args=["waits"]), QUERY))
    assert waits[0] == {
        "week": "2026-03-02",
        "jobs_started": "3",
        "median_wait_hours": "2.000",
        "p95_wait_hours": "2.900",
    }
    top = read_csv(client.get(reverse("usage-chart-csv", args=["top-users"]), QUERY))
    assert [row["user"] for row in top] == ["alice", "bob"]


def test_a_student_downloads_only_their_own_numbers(client, lab):
    client.force_login(lab["bob"])
    weekly = read_csv(client.get(reverse("usage-chart-csv", args=["weekly"]), QUERY))
    assert {row["user"] for row in weekly} == {"bob"}
    assert client.get(reverse("usage-chart-csv", args=["occupancy"]), QUERY).status_code == 403
    assert client.get(reverse("usage-chart-csv", args=["top-users"]), QUERY).status_code == 403


def test_an_unknown_chart_is_404(client, staff):
    client.force_login(staff)
    assert client.get(reverse("usage-chart-csv", args=["nothing"]), QUERY).status_code == 404


def test_weekly_occupancy_columns_split_a_hold_at_the_week_boundary(db):
    host = HostFactory(name="gpu-09", gpus=1)
    [gpu] = host.gpus.all()
    # Sunday 20:00 to Monday 02:00, local time: 4 h in the first week, 2 h in the second.
    ReservationFactory(host=host, start=local(2026, 3, 8, 20), end=local(2026, 3, 9, 2), gpus=[gpu])
    ten_weeks = UsageFilter(first=local(2026, 3, 2).date(), last=local(2026, 5, 10).date())
    occupancy = gpu_occupancy(ten_weeks)
    assert len(occupancy.buckets) == 10
    [row] = occupancy.rows
    assert row.hours[:3] == pytest.approx((4.0, 2.0, 0.0))
    assert sum(row.hours) == pytest.approx(6.0)


def test_a_hold_from_before_the_range_counts_only_inside_it(db):
    host = HostFactory(name="gpu-09", gpus=1)
    [gpu] = host.gpus.all()
    ReservationFactory(host=host, start=local(2026, 3, 1, 20), end=local(2026, 3, 2, 3), gpus=[gpu])
    [row] = gpu_occupancy(MARCH).rows
    assert row.hours[0] == pytest.approx(3.0)
    assert sum(row.hours) == pytest.approx(3.0)


def test_a_student_with_a_weekly_budget_sees_it_beside_their_hours(client, db):
    student = UserFactory(
        username="carol", capability_profile=CapabilityProfileFactory(gpu_hours_per_week=40)
    )
    host = HostFactory(name="gpu-03", gpus=1)
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    ReservationFactory(
        user=student,
        host=host,
        start=start,
        end=start + timedelta(hours=6),
        status="ended",
        gpus=list(host.gpus.all()),
    )
    client.force_login(student)
    body = client.get(reverse("usage")).content.decode()
    assert 'data-testid="budget"' in body
    assert "6.0 / 40.0" in body
