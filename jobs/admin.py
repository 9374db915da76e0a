from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_POST

from aivc_portal.admin_actions import apply_to_each, log_each, tell_owner
from bookings.models import Reservation
from jobs import selectors
from jobs.build_services import builds_requeue
from jobs.models import HostDrain, Job, JobBuild, QueueState, WaitReason
from jobs.services import (
    host_drain,
    host_undrain,
    job_cancel,
    job_hold,
    job_release,
    queue_pause,
    queue_resume,
)

STATISTICS_DAYS = 14


class CannotRunFilter(admin.SimpleListFilter):
    """Queued jobs the last pass found no host could ever run (limits or access changed
    after they were queued): each waits for its owner, or a maintainer, to act."""

    title = "can no longer run"
    parameter_name = "cannot_run"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("yes", "Yes: queued, no host can run it any more")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(status=Job.Status.QUEUED, wait_reason=WaitReason.NEVER)
        return queryset


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "user",
        "status",
        "where",
        "cpus",
        "memory_gb",
        "gpu_count",
        "time_limit_minutes",
        "planned_start",
        "submitted_at",
        "started_at",
        "finished_at",
        "exit_code",
        "waiting_for",
    )
    list_filter = (
        "status",
        CannotRunFilter,
        ("held_at", admin.EmptyFieldListFilter),
        "wait_reason",
        "host",
        "planned_host",
    )
    list_select_related = ("user", "host", "planned_host", "reservation__host")
    search_fields = ("user__username", "command")
    date_hierarchy = "submitted_at"
    # Status and capacity change only through the services (cancel here, the scheduler and
    # the lifecycle elsewhere), which keep the job's reservation in step.
    readonly_fields = [field.name for field in Job._meta.fields]
    actions = ["cancel", "hold", "release"]
    change_list_template = "admin/jobs/job/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Host")
    def where(self, job: Job) -> str:
        if job.reservation is not None:
            return job.reservation.host.name
        return job.host.name if job.host else "any"

    @admin.action(description="Cancel (queued: leave the queue; running: stop)", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        def cancel(job: Job) -> None:
            job = job_cancel(job=job, ended_by=Reservation.EndedBy.MAINTAINER)
            tell_owner(
                request,
                reservation=job.reservation,
                user=job.user,
                subject=f"Job #{job.pk}",
                action="was cancelled",
                takes_time=True,
            )

        apply_to_each(self, request, queryset, cancel, "Cancelled", audit="Cancelled.")

    @admin.action(
        description="Hold (queued: the scheduler skips them until released)", permissions=["change"]
    )
    def hold(self, request: HttpRequest, queryset: QuerySet) -> None:
        now = timezone.now()
        apply_to_each(
            self,
            request,
            queryset,
            lambda job: job_hold(job=job, by=request.user, now=now),
            "Held",
            audit="Held.",
        )

    @admin.action(description="Release (held: back in the queue at their place)", permissions=["change"])
    def release(self, request: HttpRequest, queryset: QuerySet) -> None:
        apply_to_each(
            self, request, queryset, lambda job: job_release(job=job), "Released", audit="Released."
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("statistics/", view(self.statistics_view), name="jobs_job_statistics"),
            path("pause/", view(self.pause_view), name="jobs_job_pause"),
            path("resume/", view(self.resume_view), name="jobs_job_resume"),
            *super().get_urls(),
        ]

    def statistics_view(self, request: HttpRequest) -> TemplateResponse:
        """Everyone's fair-share usage and jobs, the queue's length and waits, the pause."""
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "opts": Job._meta,
            "title": "Job queue statistics",
            "users": selectors.job_statistics(now=now),
            "queue": selectors.queue_statistics(now=now, since=now - timedelta(days=STATISTICS_DAYS)),
            "state": selectors.queue_state(),
            "drains": HostDrain.objects.select_related("host", "drained_by"),
            "days": STATISTICS_DAYS,
            "half_life_days": selectors.half_life().days,
        }
        return TemplateResponse(request, "admin/jobs/job/statistics.html", context)

    def pause_view(self, request: HttpRequest) -> HttpResponse:
        return _queue_switch(request, pause=True)

    def resume_view(self, request: HttpRequest) -> HttpResponse:
        return _queue_switch(request, pause=False)


@staff_member_required
@require_POST
def _queue_switch(request: HttpRequest, *, pause: bool) -> HttpResponse:
    if not request.user.has_perm("jobs.change_job"):
        messages.error(request, "You may not pause or resume the queue.")
    elif pause:
        state = queue_pause(by=request.user, reason=request.POST.get("reason", ""))
        _log_queue_switch(request, state, "Paused the queue.")
        messages.success(request, "The queue is paused: running jobs go on, no new job starts.")
    else:
        state = queue_resume(by=request.user)
        _log_queue_switch(request, state, "Resumed the queue.")
        messages.success(request, "The queue runs again.")
    return redirect("admin:jobs_job_statistics")


def _log_queue_switch(request: HttpRequest, state: QueueState, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=request.user.pk,
        queryset=[state],
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )


@admin.register(HostDrain)
class HostDrainAdmin(admin.ModelAdmin):
    """A drained host starts no new jobs; running ones finish. Adding a row drains, deleting
    it lets jobs start there again."""

    list_display = ("host", "drained_by", "drained_since")
    list_select_related = ("host", "drained_by")
    search_fields = ("host__name",)
    list_filter = ("host",)
    fields = ("host",)
    actions = ["undrain"]

    def has_change_permission(self, request: HttpRequest, obj: HostDrain | None = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: HostDrain, form, change: bool) -> None:
        drain = host_drain(host=obj.host, by=request.user)
        obj.pk, obj.drained_by, obj.drained_since = drain.pk, drain.drained_by, drain.drained_since

    def delete_model(self, request: HttpRequest, obj: HostDrain) -> None:
        host_undrain(host=obj.host)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for drain in queryset.select_related("host"):
            host_undrain(host=drain.host)

    @admin.action(description="Undrain: jobs may start there again", permissions=["delete"])
    def undrain(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.log_deletions(request, queryset)
        self.delete_queryset(request, queryset)


@admin.register(JobBuild)
class JobBuildAdmin(admin.ModelAdmin):
    """DoPQ uploads' image builds: read-only records; the one action asks the hosts'
    agents again for builds still waiting."""

    list_display = (
        "job",
        "job_user",
        "name",
        "executor_name",
        "status",
        "started_at",
        "finished_at",
        "message",
    )
    list_filter = ("status", "job__host")
    list_select_related = ("job__user",)
    search_fields = ("job__user__username", "name", "executor_name", "message")
    readonly_fields = (
        "job",
        "status",
        "name",
        "executor_name",
        "context_digest",
        "context_file",
        "context_size",
        "started_at",
        "finished_at",
        "message",
    )
    actions = ("ask_again",)

    @admin.display(description="user", ordering="job__user__username")
    def job_user(self, build: JobBuild) -> str:
        return build.job.user.username

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(
        description="Ask the hosts again for every build still waiting (not only the selected)",
        permissions=["change"],
    )
    def ask_again(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = builds_requeue(now=timezone.now())
        log_each(self, request, queryset, "Asked the hosts again for every waiting build.")
        self.message_user(request, f"{count} waiting build(s) asked for again.", messages.INFO)
