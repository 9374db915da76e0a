"""One scheduling pass: fair-share order, EASY backfill on the capacity engine's in-memory
snapshot, then the starts written through jobs.services (which checks each again under the
host lock).

EASY backfill: jobs go in priority order. One that fits now on an allowed host starts. The
first that does not (the head) gets a planned start, the earliest time it fits, and that
window is held in the snapshot; every job after it may start now only where it fits around
that hold, so backfilled work never delays the head, and the head never blocks the queue.
Later jobs' planned starts are estimates, each held in turn (conservative), for display."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from accounts.models import Notification, NotificationKind, User
from accounts.notification_services import Notice, notifications_record
from accounts.selectors import capabilities_for
from bookings import limits as usage_limits
from bookings.capacity import MINUTE, Fit, HostLoad
from bookings.selectors import open_host_ids
from bookings.timeslots import MAX_AHEAD
from containers.models import Host
from jobs import selectors, services
from jobs.models import WaitReason
from jobs.selectors import QueuedJob

# Planned starts shown to users: estimating every job of a long queue costs more than it
# tells (and the estimates far back change with every pass), so the first ones behind the
# head get one, the rest only a position.
ESTIMATED_JOBS = 25


@dataclass(frozen=True)
class Shape:
    cpus: object
    memory_gb: int
    gpu_count: int
    minutes: int

    @classmethod
    def of(cls, job: QueuedJob) -> Shape:
        return cls(job.cpus, job.memory_gb, job.gpu_count, job.time_limit_minutes)

    def covers(self, other: Shape) -> bool:
        """Whether this request asks at least as much as `other` in every dimension."""
        return (
            self.cpus >= other.cpus
            and self.memory_gb >= other.memory_gb
            and self.gpu_count >= other.gpu_count
            and self.minutes >= other.minutes
        )


@dataclass
class Plan:
    # Each with the GPUs the plan gave it: ones the head's held window does not need.
    start_now: list[tuple[QueuedJob, Host, list[int]]] = field(default_factory=list)
    head: QueuedJob | None = None
    # Planned starts of the head and the next few waiting jobs: job id -> (start, host id).
    planned: dict[int, tuple[datetime, int]] = field(default_factory=dict)
    # What holds each job that does not start: job id -> (WaitReason, detail).
    waits: dict[int, tuple[str, str]] = field(default_factory=dict)


@dataclass
class PassReport:
    queued: int = 0
    started: list[int] = field(default_factory=list)
    lost_race: list[int] = field(default_factory=list)
    head: int | None = None
    seconds: float = 0.0
    paused: bool = False

    def __str__(self) -> str:
        if self.paused:
            return "queue paused"
        return (
            f"queued {self.queued}, started {len(self.started)}, head {self.head or '-'}, "
            f"{len(self.lost_race)} lost to a booking, {self.seconds * 1000:.0f} ms"
        )


@dataclass(frozen=True)
class Policy:
    """How a pass orders the queue and whether lower jobs may start around a blocked head.
    The lab runs FAIR_SHARE; the simulation compares it with FIFO and DoPQ's penalty."""

    name: str
    order: Callable[[list[QueuedJob], datetime], list[QueuedJob]]
    backfill: bool = True


FAIR_SHARE = Policy("fair share + EASY backfill", selectors.fair_share_order, backfill=True)


class Planner:
    """Plans one pass over an in-memory snapshot; touches the database only to read the
    snapshot and the users' capabilities (cached per user, host and request shape)."""

    def __init__(
        self,
        *,
        hosts: list[Host],
        users: list[User],
        now: datetime,
        horizon: timedelta = MAX_AHEAD,
        backfill: bool = True,
    ) -> None:
        self.now = now
        # Without backfill (FIFO, DoPQ) nothing starts behind a head that cannot.
        self.backfill = backfill
        self.until = now + horizon
        self.hosts = {host.pk: host for host in hosts}
        self.loads = {host.pk: HostLoad.load(host, now, self.until + horizon) for host in hosts}
        self.capabilities = capabilities_for(users=users, hosts=hosts, now=now)
        # Caps at once and budgets: each limited user's reservations, read once; the jobs
        # this pass starts or plans are added as it goes (a planned job counts at its
        # time limit).
        self.limits = usage_limits.limits_for_users(users=users, now=now)
        limited = [
            user_id
            for user_id, limits in self.limits.items()
            if limits.has_caps or limits.gpu_hours_per_week is not None
        ]
        reach = usage_limits.WEEK
        self.held = (
            usage_limits.holdings(user_ids=limited, start=now - reach, end=self.until + horizon + reach)
            if limited
            else {}
        )
        self._over_limits_now: dict[int, list[tuple[Shape, tuple[str, str]]]] = defaultdict(list)
        # A verdict holds until the user's usage in the pass changes (a start or a plan).
        self._usage_version: dict[int, int] = defaultdict(int)
        self._verdicts: dict[tuple[int, Shape], tuple[int, tuple[str, str] | None]] = {}
        self.open_hosts = open_host_ids(users=users, host_ids=self.hosts)
        self._allowed: dict[tuple[int, Shape, int | None], list[int]] = {}
        # Within a pass capacity only shrinks, so a request that did not fit now on a host
        # still does not fit later in the pass; so does any request covering it.
        self._no_room_now: dict[int, list[Shape]] = defaultdict(list)

    def hosts_for(self, job: QueuedJob) -> list[int]:
        """The schedulable hosts open to the job's owner where the job passes the owner's
        limits (its own host only, if it names one)."""
        shape = Shape.of(job)
        key = (job.user_id, shape, job.host_id)
        if key not in self._allowed:
            candidates = [job.host_id] if job.host_id is not None else list(self.hosts)
            self._allowed[key] = [
                host_id
                for host_id in candidates
                if host_id in self.open_hosts[job.user_id]
                and services.job_within_limits(
                    capability=self.capabilities[(job.user_id, host_id)],
                    host=self.hosts[host_id],
                    cpus=job.cpus,
                    memory_gb=job.memory_gb,
                    gpu_count=job.gpu_count,
                    minutes=job.time_limit_minutes,
                )
            ]
        return self._allowed[key]

    def why_no_host(self, job: QueuedJob) -> tuple[str, str]:
        """Why no host may run the job: NO_HOST while it may pass again by itself (its
        hosts drained or closed to bookings), NEVER with what changed when its owner's
        access or limits, or the hosts' GPUs in service, rule it out (it was valid when
        queued, so one of them changed)."""
        candidates = [job.host_id] if job.host_id is not None else list(self.hosts)
        candidates = [host_id for host_id in candidates if host_id in self.hosts]
        if not candidates:
            return (WaitReason.NO_HOST, "")
        open_ids = [host_id for host_id in candidates if host_id in self.open_hosts[job.user_id]]
        if not open_ids:
            return (WaitReason.NEVER, _("no host it may use is open to you any more"))
        capabilities = [self.capabilities[(job.user_id, host_id)] for host_id in open_ids]
        longest = max(capability.job_time_limit_minutes for capability in capabilities)
        if job.time_limit_minutes > longest:
            return (
                WaitReason.NEVER,
                _("the profile's limit is now %(most)s minutes, it asks for %(asked)s")
                % {"most": longest, "asked": job.time_limit_minutes},
            )
        in_service = max(len(self.hosts[host_id].active_gpus) for host_id in open_ids)
        if job.gpu_count > in_service:
            return (
                WaitReason.NEVER,
                _("it asks for %(asked)s GPUs, a host open to you has at most %(most)s in service")
                % {"asked": job.gpu_count, "most": in_service},
            )
        return (WaitReason.NEVER, _("it asks for more than your profile or any host open to you allows"))

    def fits_now(self, job: QueuedJob, host_id: int) -> bool:
        shape = Shape.of(job)
        if any(shape.covers(failed) for failed in self._no_room_now[host_id]):
            return False
        fits = self.loads[host_id].fits(
            self.now,
            self.now + job.time_limit,
            cpus=job.cpus,
            memory_gb=job.memory_gb,
            gpu_count=job.gpu_count,
        )
        if not fits:
            self._no_room_now[host_id].append(shape)
        return fits

    def earliest(self, job: QueuedJob, not_before: datetime | None = None) -> Fit | None:
        """The earliest fitting window over the job's hosts, on the minute."""
        best = None
        not_before = not_before or self.now
        for host_id in self.hosts_for(job):
            found = self.loads[host_id].earliest_fit(
                cpus=job.cpus,
                memory_gb=job.memory_gb,
                gpu_count=job.gpu_count,
                duration=job.time_limit,
                not_before=not_before,
                # A later host is only searched for a start before the best so far.
                not_after=self.until if best is None else best.start - MINUTE,
                grid=MINUTE,
            )
            if found is not None and (best is None or found.start < best.start):
                best = found
            if best is not None and best.start <= not_before:
                break
        return best

    def limits_hold(self, job: QueuedJob) -> tuple[str, str] | None:
        """Whether the job's owner's caps or budget keep it from starting now: (reason,
        detail), or None. Within a pass a user's holdings only grow, so a job asking at
        least as much as one held back is held back too."""
        if job.user_id not in self.held:
            return None
        shape = Shape.of(job)
        version = self._usage_version[job.user_id]
        known = self._verdicts.get((job.user_id, shape))
        if known is not None and known[0] == version:
            return known[1]
        for failed, reason in self._over_limits_now[job.user_id]:
            if shape.covers(failed):
                return reason
        reason = usage_limits.wait_reason(
            limits=self.limits[job.user_id],
            held=self.held[job.user_id],
            start=self.now,
            end=self.now + job.time_limit,
            cpus=job.cpus,
            memory_gb=job.memory_gb,
            gpu_count=job.gpu_count,
        )
        if reason is not None:
            self._over_limits_now[job.user_id].append((shape, reason))
        self._verdicts[(job.user_id, shape)] = (version, reason)
        return reason

    def _count(self, job: QueuedJob, start: datetime) -> None:
        """The job's window in its owner's usage, for the caps and budget of later jobs."""
        if job.user_id in self.held:
            self._usage_version[job.user_id] += 1
            self.held[job.user_id].append(
                usage_limits.Held(
                    start, start + job.time_limit, job.cpus, job.memory_gb, job.gpu_count, True, "job", ""
                )
            )

    def _limits_from(self, job: QueuedJob, start: datetime) -> datetime | None:
        if job.user_id not in self.held:
            return start
        return usage_limits.earliest_within_limits(
            limits=self.limits[job.user_id],
            held=self.held[job.user_id],
            start=start,
            end=start + job.time_limit,
            cpus=job.cpus,
            memory_gb=job.memory_gb,
            gpu_count=job.gpu_count,
        )

    def hold(self, job: QueuedJob, host_id: int, start: datetime) -> list[int]:
        """Holds the job's window in the snapshot; returns the ids of the GPUs it took."""
        load = self.loads[host_id]
        end = start + job.time_limit
        gpus = load.availability(start, end).pick_gpus(job.gpu_count)
        load.hold(start, end, job.cpus, job.memory_gb, gpus)
        return [gpu.pk for gpu in gpus]

    def _plan_later(self, job: QueuedJob) -> tuple[datetime, int] | None:
        """The job's earliest start and host where both capacity and its owner's limits
        allow it, held in the snapshot (and counted in the owner's usage) so no later job
        takes it."""
        not_before = self.now
        for _attempt in range(16):
            found = self.earliest(job, not_before)
            if found is None:
                return None
            allowed = self._limits_from(job, found.start)
            if allowed is None or allowed > self.until:
                return None
            if allowed == found.start:
                self.loads[found.host.pk].hold(found.start, found.end, job.cpus, job.memory_gb, found.gpus)
                self._count(job, found.start)
                return (found.start, found.host.pk)
            not_before = allowed
        return None

    def plan(self, jobs: list[QueuedJob]) -> Plan:
        """`jobs` in priority order. A job its owner's caps or budget hold back is passed
        over: it is never the head and holds up nobody behind it."""
        plan = Plan()
        behind_head = []
        estimated_limited: set[int] = set()  # users with a job held back by limits estimated
        held_up = False  # a job that could run somewhere did not start
        for job in jobs:
            hosts = self.hosts_for(job)
            if not hosts:
                plan.waits[job.pk] = self.why_no_host(job)
                continue
            limited = self.limits_hold(job)
            if limited is not None:
                plan.waits[job.pk] = limited
                # One estimate per such user: the ones behind it start later still.
                if len(behind_head) < ESTIMATED_JOBS and job.user_id not in estimated_limited:
                    estimated_limited.add(job.user_id)
                    behind_head.append(job)
                continue
            may_start = self.backfill or not held_up
            host_id = next((h for h in hosts if self.fits_now(job, h)), None) if may_start else None
            held_up = held_up or host_id is None
            if host_id is not None:
                gpu_ids = self.hold(job, host_id, self.now)
                self._count(job, self.now)
                plan.start_now.append((job, self.hosts[host_id], gpu_ids))
            elif plan.head is None:
                # The head: its window is held, so nothing started after it delays it. A
                # job with no window in the horizon holds nothing and lets the next one be
                # the head.
                found = self._plan_later(job)
                plan.waits[job.pk] = (WaitReason.CAPACITY, "")
                if found is not None:
                    plan.planned[job.pk] = found
                    plan.head = job
            else:
                plan.waits[job.pk] = (WaitReason.QUEUE, _("behind job #%(head)s") % {"head": plan.head.pk})
                if len(behind_head) < ESTIMATED_JOBS:
                    behind_head.append(job)
        # Estimates for display, after every start is decided: held only from here on.
        for job in behind_head:
            found = self._plan_later(job)
            if found is not None:
                plan.planned[job.pk] = found
        return plan


def schedulable_hosts() -> list[Host]:
    drained = selectors.drained_host_ids()
    return [
        host
        for host in Host.objects.filter(accepting_bookings=True).order_by("name")
        if host.pk not in drained
    ]


def _tell_jobs_that_cannot_run(
    planner: Planner, *, jobs: list[QueuedJob], waits: dict[int, tuple[str, str]], now: datetime
) -> None:
    """Tells each owner once (the notice's key) that a queued job can no longer run, in
    their language: the reason is worded again under it (the stored one is the lab's)."""
    never = [job for job in jobs if waits.get(job.pk, ("", ""))[0] == WaitReason.NEVER]
    if not never:
        return
    keys = {job.pk: f"{NotificationKind.JOB_CANNOT_RUN}:job-{job.pk}" for job in never}
    told = set(Notification.objects.filter(key__in=keys.values()).values_list("key", flat=True))
    never = [job for job in never if keys[job.pk] not in told]
    languages = dict(User.objects.filter(pk__in={job.user_id for job in never}).values_list("pk", "language"))
    notices = []
    for job in never:
        with translation.override(languages.get(job.user_id) or settings.LANGUAGE_CODE):
            _reason, detail = planner.why_no_host(job)
            notices.append(
                Notice(
                    user_id=job.user_id,
                    kind=NotificationKind.JOB_CANNOT_RUN,
                    key=keys[job.pk],
                    title=_("Job #%(job)s can no longer run") % {"job": job.pk},
                    body=_(
                        "No host can run job #%(job)s any more: %(detail)s. It stays queued; "
                        "cancel it, or submit it again within your limits."
                    )
                    % {"job": job.pk, "detail": detail},
                    link=reverse("job-detail", kwargs={"pk": job.pk}),
                )
            )
    notifications_record(notices=notices, now=now)


def run_pass(*, now: datetime, policy: Policy = FAIR_SHARE) -> PassReport:
    """Plans and starts. The caller holds the scheduler lock."""
    began = time.perf_counter()
    report = PassReport()
    if selectors.queue_state().paused:
        report.paused = True
        return report
    # Dependencies first: a job whose dependency can no longer be met is cancelled; one
    # still waiting on another job is not planned.
    after = services.jobs_settle_dependencies(now=now)
    jobs = selectors.queued_rows()
    report.queued = len(jobs)
    if after:
        jobs = [job for job in jobs if job.pk not in after]
    if not jobs:
        services.job_record_plan(
            plans={}, waits={pk: (WaitReason.DEPENDENCY, text) for pk, text in after.items()}
        )
        return report
    jobs = policy.order(jobs, now)
    users = list(
        User.objects.filter(pk__in={job.user_id for job in jobs}).only("pk", "capability_profile_id")
    )
    planner = Planner(hosts=schedulable_hosts(), users=users, now=now, backfill=policy.backfill)
    plan = planner.plan(jobs)
    report.head = plan.head.pk if plan.head else None
    by_host: dict[int, list[int]] = defaultdict(list)
    planned_gpus: dict[int, list[int]] = {}
    for job, host, gpu_ids in plan.start_now:
        by_host[host.pk].append(job.pk)
        planned_gpus[job.pk] = gpu_ids
    for host_id, job_ids in by_host.items():
        started = services.jobs_start(
            host=planner.hosts[host_id], job_ids=job_ids, now=now, planned_gpus=planned_gpus
        )
        report.started.extend(started)
        report.lost_race.extend(pk for pk in job_ids if pk not in set(started))
    waits = {**plan.waits, **{pk: (WaitReason.DEPENDENCY, text) for pk, text in after.items()}}
    services.job_record_plan(plans=plan.planned, waits=waits)
    _tell_jobs_that_cannot_run(planner, jobs=jobs, waits=plan.waits, now=now)
    report.seconds = time.perf_counter() - began
    return report
