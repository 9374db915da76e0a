"""The timeline selector: every host's GPUs over the next two weeks on the booking grid.
A fixed number of queries whatever the number of reservations: hosts, their GPUs, the
live reservations in the window (with usernames) and their active allocations."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Prefetch
from django.utils import timezone

from bookings.capacity import usage_per_slot
from bookings.models import GpuAllocation, Reservation
from bookings.timeslots import MAX_AHEAD, SLOT, slot_floor
from containers.models import Gpu, Host

HOURS_PER_LABEL = 6


@dataclass(frozen=True, slots=True)
class Block:
    """A booked stretch of one GPU row; `column` counts slots from 1."""

    column: int
    span: int
    username: str
    start: datetime
    end: datetime
    own: bool
    reservation_id: int | None
    is_job: bool = False  # a batch job's block: labelled as a job, another's without a name


@dataclass(frozen=True)
class Headroom:
    """What stays free on a host across `span` slots from `column`."""

    column: int
    span: int
    cpus: Decimal
    memory_gb: int
    cpus_share: float
    memory_share: float

    @property
    def cpus_text(self) -> str:
        return f"{self.cpus.normalize():f}"

    @property
    def overbooked(self) -> bool:
        return self.cpus < 0 or self.memory_gb < 0

    @property
    def cpus_level(self) -> str:
        return _level(self.cpus_share)

    @property
    def memory_level(self) -> str:
        return _level(self.memory_share)


def _level(share: float) -> str:
    """A coarse band for colouring headroom: over (overbooked), none, low, some, plenty."""
    if share < 0:
        return "over"
    if share == 0:
        return "none"
    return "low" if share < 0.2 else "some" if share < 0.5 else "plenty"


@dataclass
class GpuRow:
    gpu: Gpu
    blocks: list[Block] = field(default_factory=list)


@dataclass
class HostTimeline:
    host: Host
    gpu_rows: list[GpuRow]
    headroom: list[Headroom]
    # Reservations that hold no GPU (CPU-only bookings, CPU jobs), in as few lanes as
    # keep them from overlapping: a host without GPUs shows who holds its CPUs too.
    cpu_rows: list[list[Block]] = field(default_factory=list)


@dataclass(frozen=True)
class Mark:
    column: int
    span: int
    label: datetime

    @property
    def grid_column(self) -> int:
        return self.column + 1  # The row label takes grid column 1.


@dataclass
class Timeline:
    start: datetime
    end: datetime
    slots: int
    days: list[Mark]
    hours: list[Mark]
    hosts: list[HostTimeline]


def _column(moment: datetime, *, start: datetime, slots: int) -> int:
    """The 0-based slot holding `moment`, clipped to the window."""
    return min(max((moment - start) // SLOT, 0), slots)


def _column_after(moment: datetime, *, start: datetime, slots: int) -> int:
    """The 0-based slot boundary at or after `moment`, clipped to the window."""
    return min(max(-((start - moment) // SLOT), 0), slots)


def _marks(*, start: datetime, slots: int, every: timedelta, align: bool) -> list[Mark]:
    """Header cells: one per local day (align) or per `every` of time."""
    marks = []
    column = 0
    while column < slots:
        local = timezone.localtime(start + column * SLOT)
        if align:
            following = (local + timedelta(days=1)).replace(hour=0, minute=0)
        else:
            hour = local.hour - local.hour % HOURS_PER_LABEL
            following = local.replace(hour=hour, minute=0) + every
        next_column = _column_after(following, start=start, slots=slots)
        marks.append(Mark(column=column + 1, span=next_column - column, label=local))
        column = next_column
    return marks


def _headroom(host: Host, rows: list[tuple], *, start: datetime, slots: int) -> list[Headroom]:
    """Free CPUs and memory per slot, from the capacity engine, as runs of equal value."""
    runs: list[Headroom] = []
    for column, used in enumerate(usage_per_slot(rows, start=start, slots=slots)):
        # Not clamped at zero: below it the host is overbooked (shrunk in admin below what
        # is booked), and the timeline says by how much instead of "0 free".
        cpus_free, memory_free = Decimal(host.cpus) - used.cpus, host.memory_gb - used.memory_gb
        if runs and runs[-1].cpus == cpus_free and runs[-1].memory_gb == memory_free:
            last = runs[-1]
            runs[-1] = Headroom(
                last.column, last.span + 1, last.cpus, last.memory_gb, last.cpus_share, last.memory_share
            )
            continue
        runs.append(
            Headroom(
                column=column + 1,
                span=1,
                cpus=cpus_free,
                memory_gb=memory_free,
                cpus_share=float(cpus_free / host.cpus) if host.cpus else 0.0,
                memory_share=memory_free / host.memory_gb if host.memory_gb else 0.0,
            )
        )
    return runs


def _lanes(blocks: list[Block]) -> list[list[Block]]:
    """Blocks packed into the fewest rows in which none overlap (first fit by start)."""
    lanes: list[list[Block]] = []
    for block in sorted(blocks, key=lambda b: (b.column, -b.span)):
        for lane in lanes:
            last = lane[-1]
            if last.column + last.span <= block.column:
                lane.append(block)
                break
        else:
            lanes.append([block])
    return lanes


def _block(*, reservation_id: int, window: tuple, user_id: int, start: datetime, slots: int) -> Block:
    row_start, row_end, owner_id, username, is_job = window
    first = _column(row_start, start=start, slots=slots)
    own = owner_id == user_id
    return Block(
        column=first + 1,
        span=max(_column_after(row_end, start=start, slots=slots) - first, 1),
        username=username,
        start=row_start,
        end=row_end,
        own=own,
        reservation_id=reservation_id if own else None,
        is_job=is_job,
    )


def timeline(
    *, user_id: int, now: datetime, host_id: int | None = None, names_job_owners: bool = False
) -> Timeline:
    """Every host (or one) from the current slot for two weeks: GPU rows with booked
    blocks (username only: another user's command or image is never exposed), the
    reservations that hold no GPU in their own rows, the user's own blocks marked, and the
    CPU and memory headroom. Another user's job is anonymous unless `names_job_owners`
    (staff)."""
    start = slot_floor(now)
    end = start + MAX_AHEAD
    slots = (end - start) // SLOT
    hosts = Host.objects.order_by("name").prefetch_related(
        Prefetch("gpus", queryset=Gpu.objects.filter(is_active=True).order_by("index"))
    )
    if host_id is not None:
        hosts = hosts.filter(pk=host_id)
    hosts = list(hosts)
    host_ids = [host.pk for host in hosts]
    # One pass over the live reservations in the window feeds both the headroom and the
    # blocks. The services keep an active allocation's window equal to its reservation's
    # (create, extend and release move both), so blocks take the reservation's times.
    reservations = (
        Reservation.objects.live()
        .filter(host_id__in=host_ids)
        .overlapping(start, end)
        .values_list(
            "id", "host_id", "start", "end", "cpus", "memory_gb", "user_id", "user__username", "kind"
        )
    )
    usage_by_host: dict[int, list[tuple]] = {}
    windows: dict[int, tuple] = {}
    host_of: dict[int, int] = {}
    for pk, host_pk, row_start, row_end, cpus, memory_gb, owner_id, username, kind in reservations:
        usage_by_host.setdefault(host_pk, []).append((row_start, row_end, cpus, memory_gb))
        is_job = kind == Reservation.Kind.JOB
        # Whose batch job holds a GPU is nobody else's business: an anonymous block.
        shown = username if owner_id == user_id or not is_job or names_job_owners else ""
        windows[pk] = (row_start, row_end, owner_id, shown, is_job)
        host_of[pk] = host_pk
    # Filtered by the few GPU ids and the window, not by thousands of reservation ids.
    gpu_ids = [gpu.pk for host in hosts for gpu in host.gpus.all()]
    allocations = (
        GpuAllocation.objects.filter(gpu_id__in=gpu_ids, active=True, start__lt=end, end__gt=start)
        .order_by("start")
        .values_list("gpu_id", "reservation_id")
    )
    blocks_by_gpu: dict[int, list[Block]] = {}
    holding_gpus: set[int] = set()
    for gpu_id, reservation_id in allocations:
        if reservation_id not in windows:
            continue
        holding_gpus.add(reservation_id)
        blocks_by_gpu.setdefault(gpu_id, []).append(
            _block(
                reservation_id=reservation_id,
                window=windows[reservation_id],
                user_id=user_id,
                start=start,
                slots=slots,
            )
        )
    cpu_blocks: dict[int, list[Block]] = {}
    for reservation_id, window in windows.items():
        if reservation_id not in holding_gpus:
            cpu_blocks.setdefault(host_of[reservation_id], []).append(
                _block(
                    reservation_id=reservation_id, window=window, user_id=user_id, start=start, slots=slots
                )
            )
    return Timeline(
        start=start,
        end=end,
        slots=slots,
        days=_marks(start=start, slots=slots, every=timedelta(days=1), align=True),
        hours=_marks(start=start, slots=slots, every=timedelta(hours=HOURS_PER_LABEL), align=False),
        hosts=[
            HostTimeline(
                host=host,
                gpu_rows=[GpuRow(gpu=gpu, blocks=blocks_by_gpu.get(gpu.pk, [])) for gpu in host.gpus.all()],
                headroom=_headroom(host, usage_by_host.get(host.pk, []), start=start, slots=slots),
                cpu_rows=_lanes(cpu_blocks.get(host.pk, [])),
            )
            for host in hosts
        ],
    )
