"""Shapes of the jobs API: fields as the Job model; the rules stay in jobs.services."""

from rest_framework import serializers

from jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    host = serializers.CharField(source="host.name", allow_null=True, default=None)
    running_on = serializers.CharField(source="reservation.host.name", allow_null=True, default=None)
    image = serializers.CharField(source="image.reference")
    cpus = serializers.DecimalField(max_digits=6, decimal_places=2, coerce_to_string=False)
    gpu_indices = serializers.SerializerMethodField()
    planned_host = serializers.CharField(source="planned_host.name", allow_null=True, default=None)
    can_cancel = serializers.BooleanField(read_only=True)
    held = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField()
    waiting_for = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = (
            "id",
            "status",
            "status_message",
            "host",
            "running_on",
            "image",
            "command",
            "cpus",
            "memory_gb",
            "gpu_count",
            "gpu_indices",
            "time_limit_minutes",
            "submitted_at",
            "started_at",
            "finished_at",
            "exit_code",
            "queue_position",
            "planned_start",
            "planned_host",
            "wait_reason",
            "wait_detail",
            "waiting_for",
            "log_size",
            "log_truncated",
            "can_cancel",
            "held",
            "held_at",
        )
        read_only_fields = fields

    def get_held(self, job: Job) -> bool:
        """Held: the scheduler skips it until its owner or a maintainer releases it."""
        return job.held_at is not None

    def get_queue_position(self, job: Job) -> int | None:
        """The job's place in the queue (1 = next); the view reads the queue once a request."""
        return self.context.get("positions", {}).get(job.pk)

    def get_waiting_for(self, job: Job) -> str | None:
        """What holds a queued job, in words ("your GPUs at once"); null once it runs."""
        return job.waiting_for

    def get_gpu_indices(self, job: Job) -> list[int]:
        return job.reservation.gpu_indices() if job.reservation else []


class JobCreateSerializer(serializers.Serializer):
    command = serializers.CharField(
        max_length=4000,
        trim_whitespace=False,
        help_text="Split into arguments like a shell, never run by one.",
    )
    cpus = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
    memory_gb = serializers.IntegerField(help_text="GiB of memory (RAM plus swap).")
    gpu_count = serializers.IntegerField(default=0)
    time_limit_minutes = serializers.IntegerField(help_text="The job is stopped when it runs this long.")
    image = serializers.CharField(
        max_length=255, required=False, allow_null=True, help_text="Image reference or id; default: yours."
    )
    host = serializers.CharField(
        max_length=64, required=False, allow_null=True, help_text="Host name or id; default: any host."
    )
    dependency = serializers.CharField(
        max_length=1000,
        required=False,
        allow_blank=True,
        help_text="Your jobs it waits for, as Slurm writes it: afterok:12:13,afterany:14,afternotok:15.",
    )


class JobFilterSerializer(serializers.Serializer):
    status = serializers.MultipleChoiceField(choices=Job.Status.choices, required=False)


class LogQuerySerializer(serializers.Serializer):
    tail = serializers.IntegerField(min_value=0, max_value=10_000, default=200, help_text="Last lines.")


class JobLogSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    log = serializers.CharField(allow_blank=True)
    log_size = serializers.IntegerField()
    log_truncated = serializers.BooleanField()
