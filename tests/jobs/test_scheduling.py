from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django_q.models import OrmQ

from bookings.models import GpuAllocation, Reservation
from bookings.reports import ReportRange, reservation_rows
from bookings.services import reservation_create
from jobs.models import Job
from jobs.scheduling import run_pass
from jobs.selectors import queue_positions
from jobs.services import host_drain, job_cancel, job_finish, job_submit, jobs_start, queue_pause
from jobs.tasks import schedule_jobs
from tests.bookings.report_rows import named
from tests.factories import HostFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 2, 10, 10)
HOUR = timedelta(hours=1)


def submit(user, minutes=60, gpus=1, now=NOW, **kwargs):
    values = {"command": "python train.py", "cpus": 1, "memory_gb": 1, "gpu_count": gpus}
    values.update(kwargs)
    return job_submit(user=user, time_limit_minutes=minutes, now=now, **values)


def book(user, host, start, end, gpus):
    """A booking written directly, holding the given GPU rows."""
    return ReservationFactory(user=user, host=host, start=start, end=end, gpus=gpus)


@pytest.fixture(autouse=True)
def two_gpus_allowed(default_profile):
    default_profile.gpus = 2
    default_profile.save()


@pytest.fixture
def gpus(host):
    return list(host.gpus.order_by("index"))


def refreshed(*jobs):
    for job in jobs:
        job.refresh_from_db()
    return jobs


def test_a_job_that_fits_starts_now_holding_its_capacity_like_a_booking(student, host, image, gpus):
    job = submit(student, minutes=90, cpus=2, memory_gb=4)
    report = run_pass(now=NOW)
    assert report.started == [job.pk]
    (job,) = refreshed(job)
    assert job.status == Job.Status.STARTING and job.started_at == NOW
    reservation = job.reservation
    assert reservation.kind == Reservation.Kind.JOB and reservation.host == host
    assert (reservation.start, reservation.end) == (NOW, NOW + timedelta(minutes=90))
    assert (reservation.cpus, reservation.memory_gb, reservation.gpu_count) == (2, 4, 1)
    assert reservation.gpu_indices() == [0]


def test_a_job_never_runs_into_a_reservation(student, host, image, gpus):
    other = UserFactory(username="booker")
    book(other, host, NOW + timedelta(minutes=30), NOW + 3 * HOUR, gpus)
    job = submit(student, minutes=60)
    run_pass(now=NOW)
    (job,) = refreshed(job)
    # Both GPUs are free for 30 minutes only: the hour-long job waits for the booking's end.
    assert job.status == Job.Status.QUEUED
    assert job.planned_start == NOW + 3 * HOUR and queue_positions(now=NOW)[job.pk] == 1


def test_a_short_job_fits_the_gap_before_a_reservation(student, host, image, gpus):
    book(UserFactory(username="booker"), host, NOW + HOUR, NOW + 3 * HOUR, gpus)
    job = submit(student, minutes=60)
    assert run_pass(now=NOW).started == [job.pk]


def test_backfill_starts_small_jobs_only_where_they_do_not_delay_the_head(host, image, gpus):
    book(UserFactory(username="booker"), host, NOW - HOUR, NOW + 2 * HOUR, gpus[:1])
    head = submit(UserFactory(username="head"), minutes=60, gpus=2)
    fits_before = submit(UserFactory(username="short"), minutes=120, gpus=1)
    would_delay = submit(UserFactory(username="long"), minutes=180, gpus=1)
    report = run_pass(now=NOW)
    head, fits_before, would_delay = refreshed(head, fits_before, would_delay)
    assert report.head == head.pk and head.planned_start == NOW + 2 * HOUR
    assert fits_before.status == Job.Status.STARTING
    assert would_delay.status == Job.Status.QUEUED
    assert would_delay.planned_start == NOW + 3 * HOUR  # after the head
    assert queue_positions(now=NOW) == {head.pk: 1, would_delay.pk: 2}


def test_a_backfilled_job_takes_the_gpu_the_plan_gave_it_not_the_heads(host, image, gpus):
    # CPUs, not GPUs, keep the head waiting an hour; the plan holds the preferred GPU 0 for
    # it from then on and backfills a long job onto GPU 1. The database alone prefers GPU 0
    # too: starting the backfilled job there would sit it on the head's GPU.
    ReservationFactory(
        user=UserFactory(username="booker"), host=host, start=NOW - HOUR, end=NOW + HOUR, cpus=12
    )
    head = submit(UserFactory(username="head"), minutes=60, gpus=1, cpus=8)
    backfilled = submit(UserFactory(username="long"), minutes=120, gpus=1, cpus=2)
    report = run_pass(now=NOW)
    head, backfilled = refreshed(head, backfilled)
    assert report.head == head.pk and head.planned_start == NOW + HOUR
    assert backfilled.status == Job.Status.STARTING
    assert backfilled.reservation.gpu_indices() == [1]


def test_a_job_done_early_gives_the_rest_of_its_time_limit_back_in_the_usage_report(
    student, host, image, gpus
):
    job = submit(student, minutes=600)
    run_pass(now=NOW)
    (job,) = refreshed(job)
    job_finish(job=job, status=Job.Status.SUCCEEDED, exit_code=0, now=NOW + timedelta(minutes=6))
    march = ReportRange(first=NOW.date(), last=NOW.date())
    [row] = [named(row) for row in reservation_rows(report_range=march, now=NOW + HOUR)]
    assert (row["hours_booked"], row["hours_given_back"]) == ("10.00", "9.90")
    assert (row["kind"], row["end_reason"]) == ("job", "finished")


def test_the_big_head_starts_when_planned_despite_a_stream_of_small_jobs(host, image, gpus):
    book(UserFactory(username="booker"), host, NOW - HOUR, NOW + HOUR, gpus[:1])
    head = submit(UserFactory(username="big"), minutes=60, gpus=2)
    small_user = UserFactory(username="small")
    moment = NOW
    while moment < NOW + HOUR:
        submit(small_user, minutes=45, gpus=1, now=moment)
        run_pass(now=moment)
        moment += timedelta(minutes=15)
    for job in Job.objects.filter(status=Job.Status.STARTING):
        job_finish(job=job, status=Job.Status.SUCCEEDED, exit_code=0, now=job.reservation.end)
    run_pass(now=NOW + HOUR)
    (head,) = refreshed(head)
    assert head.status == Job.Status.STARTING and head.started_at == NOW + HOUR


def test_lower_fair_share_usage_goes_first(host, image, gpus):
    heavy, light = UserFactory(username="heavy"), UserFactory(username="light")
    ReservationFactory(
        user=heavy, host=host, start=NOW - 10 * HOUR, end=NOW - HOUR, gpus=gpus, status="ended"
    )
    book(UserFactory(username="booker"), host, NOW - HOUR, NOW + 5 * HOUR, gpus[:1])
    heavy_job = submit(heavy, minutes=60, now=NOW - timedelta(minutes=5))
    light_job = submit(light, minutes=60)
    run_pass(now=NOW)
    heavy_job, light_job = refreshed(heavy_job, light_job)
    assert light_job.status == Job.Status.STARTING
    assert heavy_job.status == Job.Status.QUEUED and queue_positions(now=NOW)[heavy_job.pk] == 1


def test_a_paused_queue_starts_nothing(student, admin_user, host, image, gpus):
    job = submit(student)
    queue_pause(by=admin_user, now=NOW)
    assert run_pass(now=NOW).paused
    (job,) = refreshed(job)
    assert job.status == Job.Status.QUEUED


def test_a_drained_host_starts_no_new_job(student, admin_user, image):
    drained = HostFactory(name="a-drained", cpus=16, ram_gb=64, swap_gb=16, gpus=2)
    open_host = HostFactory(name="b-open", cpus=16, ram_gb=64, swap_gb=16, gpus=2)
    host_drain(host=drained, by=admin_user, now=NOW)
    job = submit(student)
    run_pass(now=NOW)
    (job,) = refreshed(job)
    assert job.reservation.host == open_host


def test_a_job_for_one_host_waits_for_that_host(student, image):
    busy = HostFactory(name="a-busy", cpus=16, ram_gb=64, swap_gb=16, gpus=1)
    HostFactory(name="b-free", cpus=16, ram_gb=64, swap_gb=16, gpus=1)
    book(UserFactory(username="booker"), busy, NOW - HOUR, NOW + HOUR, list(busy.gpus.all()))
    job = submit(student, host=busy)
    run_pass(now=NOW)
    (job,) = refreshed(job)
    assert job.status == Job.Status.QUEUED and job.planned_host == busy


def test_two_passes_start_a_job_once(student, host, image, gpus):
    job = submit(student)
    schedule_jobs(now=NOW)
    schedule_jobs(now=NOW)
    assert Reservation.objects.filter(kind=Reservation.Kind.JOB).count() == 1
    (job,) = refreshed(job)
    assert job.status == Job.Status.STARTING


def test_a_booking_made_later_cannot_take_a_running_jobs_gpus(student, host, image, gpus):
    job = submit(student, gpus=2, minutes=180)
    run_pass(now=NOW)
    with pytest.raises(ValidationError) as error:
        reservation_create(
            user=UserFactory(username="late"),
            host=host,
            start="now",
            end="1-day",
            cpus=1,
            memory_gb=1,
            gpu_count=1,
            now=NOW,
        )
    assert "not enough computing power" in " ".join(error.value.messages)
    assert job.user == student


def test_a_job_that_ends_early_frees_its_capacity_at_once(student, host, image, gpus):
    job = submit(student, gpus=2, minutes=600)
    run_pass(now=NOW)
    (job,) = refreshed(job)
    finished_at = NOW + timedelta(minutes=7)
    assert job_finish(job=job, status=Job.Status.SUCCEEDED, exit_code=0, now=finished_at)
    job.reservation.refresh_from_db()
    assert job.reservation.status == Reservation.Status.ENDED and job.reservation.end == finished_at
    assert set(GpuAllocation.objects.values_list("end", flat=True)) == {finished_at}
    booking = reservation_create(
        user=UserFactory(username="next"),
        host=host,
        start="now",
        end="1-day",
        cpus=1,
        memory_gb=1,
        gpu_count=2,
        now=finished_at,
    )
    assert booking.gpu_indices() == [0, 1]


def test_cancelling_a_running_job_frees_its_capacity_and_queues_the_stop(
    student, host, image, gpus, django_capture_on_commit_callbacks
):
    job = submit(student, gpus=2, minutes=600)
    run_pass(now=NOW)
    OrmQ.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        job_cancel(job=job, now=NOW + HOUR)
    (job,) = refreshed(job)
    assert job.status == Job.Status.CANCELLED and job.finished_at == NOW + HOUR
    assert job.reservation.status == Reservation.Status.ENDED and job.reservation.end == NOW + HOUR
    assert OrmQ.objects.count() == 2  # reconcile (stop the container), schedule (reuse the room)


def test_a_users_booking_and_job_may_overlap(student, host, image, gpus):
    book(student, host, NOW - HOUR, NOW + HOUR, gpus[:1])
    job = submit(student)
    assert run_pass(now=NOW).started == [job.pk]


def test_a_planned_start_is_checked_again_against_the_database(student, host, image, gpus):
    job = submit(student, gpus=2)
    # A booking that came in after the pass read its snapshot.
    book(UserFactory(username="quick"), host, NOW - HOUR, NOW + HOUR, gpus[:1])
    assert jobs_start(host=host, job_ids=[job.pk], now=NOW) == []
    (job,) = refreshed(job)
    assert job.status == Job.Status.QUEUED and not Reservation.objects.filter(kind="job").exists()


def test_starts_on_one_host_are_checked_against_each_other_in_order(host, image, gpus):
    first = submit(UserFactory(username="first"), gpus=2)
    second = submit(UserFactory(username="second"), gpus=1)
    assert jobs_start(host=host, job_ids=[first.pk, second.pk], now=NOW) == [first.pk]
    first, second = refreshed(first, second)
    assert first.reservation.gpu_indices() == [0, 1] and second.status == Job.Status.QUEUED
