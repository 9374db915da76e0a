"""Shapes of the bookings API: input is checked for shape here, the rules stay in
services.py, so the API and the pages answer with the same messages."""

from django.utils import timezone
from rest_framework import serializers

from aivc_portal.api import TimeInputField
from bookings.models import Reservation, WaitlistEntry


def ssh_command(reservation: Reservation) -> str:
    return f"ssh -p {reservation.forward_port} root@{reservation.host.address or reservation.host.name}"


class ReservationSerializer(serializers.ModelSerializer):
    host = serializers.CharField(source="host.name")
    host_id = serializers.IntegerField()
    image = serializers.CharField(source="image.reference", allow_null=True, default=None)
    cpus = serializers.DecimalField(max_digits=6, decimal_places=2, coerce_to_string=False)
    gpu_indices = serializers.SerializerMethodField()
    ssh_command = serializers.SerializerMethodField()
    can_cancel = serializers.SerializerMethodField()
    can_release = serializers.SerializerMethodField()
    can_extend = serializers.SerializerMethodField()

    class Meta:
        model = Reservation
        fields = (
            "id",
            "host",
            "host_id",
            "start",
            "end",
            "booked_end",
            "status",
            "status_message",
            "cpus",
            "memory_gb",
            "gpu_count",
            "gpu_indices",
            "image",
            "extra_command",
            "forward_port",
            "ssh_command",
            "started_at",
            "ended_at",
            "cancelled_at",
            "released_at",
            "restart_requested",
            "created_at",
            "can_cancel",
            "can_release",
            "can_extend",
        )
        read_only_fields = fields

    def get_gpu_indices(self, reservation: Reservation) -> list[int]:
        # From the prefetched allocations: the active ones are the GPUs it holds.
        return sorted({a.gpu.index for a in reservation.allocations.all() if a.active})

    def get_ssh_command(self, reservation: Reservation) -> str:
        return ssh_command(reservation)

    def get_can_cancel(self, reservation: Reservation) -> bool:
        return reservation.can_cancel(timezone.now())

    def get_can_release(self, reservation: Reservation) -> bool:
        return reservation.can_release(timezone.now())

    def get_can_extend(self, reservation: Reservation) -> bool:
        return reservation.can_extend(timezone.now())


class ReservationCreateSerializer(serializers.Serializer):
    host = serializers.CharField(max_length=64, help_text="Host name or id.")
    start = TimeInputField(
        help_text="`now`, `YYYY MM DD hh mm` (local time) or an ISO 8601 date-time on the half hour."
    )
    end = TimeInputField(help_text="`N-day` (1-14), `N-week` (1-2), `YYYY MM DD hh mm` or ISO 8601.")
    cpus = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
    memory_gb = serializers.IntegerField(help_text="GiB of memory (RAM plus swap).")
    gpu_count = serializers.IntegerField(default=0)
    image = serializers.CharField(
        max_length=255, required=False, allow_null=True, help_text="Image reference or id; default: yours."
    )
    extra_command = serializers.CharField(
        max_length=1000,
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Arguments to the image; default: your profile's.",
    )


class ReservationExtendSerializer(serializers.Serializer):
    end = TimeInputField(
        help_text="The new end: `N-day`/`N-week` counted from the start, `YYYY MM DD hh mm` or ISO 8601."
    )


class ReservationFilterSerializer(serializers.Serializer):
    """Query of the list: statuses (comma-separated) and a time range the reservations overlap."""

    status = serializers.CharField(required=False, max_length=200)
    after = serializers.DateTimeField(required=False, help_text="Only reservations ending after this.")
    before = serializers.DateTimeField(required=False, help_text="Only reservations starting before this.")

    def validate_status(self, value: str) -> list[str]:
        wanted = [part.strip() for part in value.split(",") if part.strip()]
        unknown = sorted(set(wanted) - set(Reservation.Status.values))
        if unknown:
            choices = ", ".join(Reservation.Status.values)
            raise serializers.ValidationError(f"Unknown status {', '.join(unknown)}; choose from {choices}.")
        return wanted


class WindowQuerySerializer(serializers.Serializer):
    start = TimeInputField(required=False, default="now")
    end = TimeInputField(required=False, help_text="Default: the end of the current half hour.")


class FitQuerySerializer(serializers.Serializer):
    host = serializers.CharField(required=False, max_length=64, help_text="Host name or id; default: any.")
    start = TimeInputField(required=False, default="now", help_text="Not before this.")
    end = TimeInputField(help_text="The window's end, e.g. `2-day`: its length is what must fit.")
    cpus = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
    memory_gb = serializers.IntegerField()
    gpu_count = serializers.IntegerField(default=0)


class CapacitySerializer(serializers.Serializer):
    cpus = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
    memory_gb = serializers.IntegerField()
    gpus = serializers.IntegerField()


class HostCapacitySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    address = serializers.CharField()
    accepting_bookings = serializers.BooleanField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    total = CapacitySerializer()
    free = CapacitySerializer(help_text="Free at every instant of [start, end).")
    your_maximum = CapacitySerializer()


class FitSerializer(serializers.Serializer):
    found = serializers.BooleanField()
    host = serializers.CharField(allow_null=True)
    start = serializers.DateTimeField(allow_null=True)
    end = serializers.DateTimeField(allow_null=True)


class TimelineBlockSerializer(serializers.Serializer):
    username = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    own = serializers.BooleanField()
    reservation_id = serializers.IntegerField(allow_null=True)


class TimelineGpuSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    name = serializers.CharField()
    blocks = TimelineBlockSerializer(many=True)


class TimelineHeadroomSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    cpus = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
    memory_gb = serializers.IntegerField()


class TimelineHostSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    gpus = TimelineGpuSerializer(many=True)
    cpu_only = TimelineBlockSerializer(
        many=True, help_text="Reservations that hold no GPU (CPU-only bookings and jobs), by start."
    )
    headroom = TimelineHeadroomSerializer(many=True)


class TimelineSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    hosts = TimelineHostSerializer(many=True)


class ImageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reference = serializers.CharField()
    description = serializers.CharField()
    cuda_version = serializers.CharField()
    is_default = serializers.BooleanField()


class WaitlistEntrySerializer(serializers.ModelSerializer):
    host = serializers.CharField(source="host.name", allow_null=True, default=None)
    image = serializers.CharField(source="image.reference", allow_null=True, default=None)
    cpus = serializers.DecimalField(max_digits=6, decimal_places=2, coerce_to_string=False)
    reservation_id = serializers.IntegerField(allow_null=True)

    class Meta:
        model = WaitlistEntry
        fields = (
            "id",
            "host",
            "mode",
            "earliest_start",
            "latest_start",
            "duration_minutes",
            "cpus",
            "memory_gb",
            "gpu_count",
            "image",
            "extra_command",
            "status",
            "status_message",
            "reservation_id",
            "created_at",
            "decided_at",
        )
        read_only_fields = fields


class WaitlistCreateSerializer(ReservationCreateSerializer):
    host = serializers.CharField(
        max_length=64,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Host name or id; default: any.",
    )
    mode = serializers.ChoiceField(
        choices=WaitlistEntry.Mode.choices,
        default=WaitlistEntry.Mode.WINDOW,
        help_text="`window`: this window when it frees up; `first_after`: the first window of this "
        "length starting between `start` and `latest_start`.",
    )
    latest_start = TimeInputField(
        required=False,
        allow_null=True,
        help_text="first_after only: `N-day` from the start, `YYYY MM DD hh mm` or ISO 8601; "
        "default: as late as a booking may start (two weeks).",
    )


class UsageSerializer(serializers.Serializer):
    """A user's usage against their limits (bookings.limits.Usage); null: no limit."""

    gpu_hours_week = serializers.FloatField(
        help_text="GPU-hours of bookings and jobs in the 7 days up to now."
    )
    gpu_hours_ahead = serializers.FloatField(help_text="GPU-hours booked or held by jobs in the next 7 days.")
    gpu_hours_per_week = serializers.DecimalField(
        source="gpu_hours_budget", max_digits=8, decimal_places=1, coerce_to_string=False, allow_null=True
    )
    gpu_hours_left = serializers.FloatField(
        allow_null=True, help_text="The budget less the fullest 7-day window that holds now."
    )
    gpus_now = serializers.IntegerField()
    cpus_now = serializers.DecimalField(max_digits=8, decimal_places=2, coerce_to_string=False)
    memory_gb_now = serializers.IntegerField()
    gpus_at_once = serializers.IntegerField(source="limits.gpus_at_once", allow_null=True)
    cpus_at_once = serializers.DecimalField(
        source="limits.cpus_at_once", max_digits=6, decimal_places=2, coerce_to_string=False, allow_null=True
    )
    memory_gb_at_once = serializers.IntegerField(source="limits.memory_gb_at_once", allow_null=True)
    max_continuous_gpu_hold_hours = serializers.SerializerMethodField()

    def get_max_continuous_gpu_hold_hours(self, usage) -> float | None:
        hold = usage.limits.continuous_gpu_hold
        return hold.total_seconds() / 3600 if hold else None
