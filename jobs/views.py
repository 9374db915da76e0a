from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from bookings.limits import usage_for
from containers import files
from containers.file_views import browse_url, zip_response
from jobs import logs, selectors
from jobs.build_services import job_submit_upload
from jobs.forms import JobForm, JobUploadForm
from jobs.models import Job
from jobs.services import job_cancel, job_hold, job_release, job_submit

RECENT_FINISHED = 30


def _owned_job(request: HttpRequest, pk: int) -> Job:
    """The signed-in user's job, or 404 for anyone else's (no hint that it exists)."""
    job = selectors.job_for_owner(user_id=request.user.pk, pk=pk)
    if job is None:
        raise Http404
    return job


@login_required
@require_safe
def job_list(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    mine = selectors.jobs_for_user(user_id=request.user.pk)
    positions = selectors.queue_positions(now=now)
    waiting = list(mine.filter(status=Job.Status.QUEUED))
    for job in waiting:
        job.position = positions.get(job.pk)
    waiting.sort(key=lambda job: (job.position or 0, job.submitted_at))
    context = {
        "waiting": waiting,
        "active": mine.filter(status__in=Job.ACTIVE_STATUSES).order_by("started_at"),
        "finished": mine.filter(status__in=Job.FINISHED_STATUSES).order_by("-finished_at")[:RECENT_FINISHED],
        "usage": selectors.decayed_usage(now=now, user_ids=[request.user.pk]).get(request.user.pk, 0.0),
        "half_life_days": selectors.half_life().days,
        "queue": selectors.queue_state(),
        "limits_usage": usage_for(user=request.user, now=now),
    }
    return render(request, "jobs/job_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def job_new(request: HttpRequest) -> HttpResponse:
    form = JobForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = job_submit(
                user=request.user,
                command=data["command"],
                cpus=data["cpus"],
                memory_gb=data["memory_gb"],
                gpu_count=data["gpu_count"],
                time_limit_minutes=data["time_limit_minutes"],
                image=data["image"],
                host=data["host"],
                dependency=data["dependency"],
            )
        except ValidationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, _("Job #%(pk)s is queued.") % {"pk": job.pk})
            return redirect("job-detail", pk=job.pk)
    return _render_submit(request, form=form, upload_form=JobUploadForm(user=request.user))


def _render_submit(request: HttpRequest, *, form: JobForm, upload_form: JobUploadForm) -> HttpResponse:
    context = {"form": form, "upload_form": upload_form, "builds_allowed": settings.JOB_BUILDS_ALLOWED}
    return render(request, "jobs/job_form.html", context)


@login_required
@require_http_methods(["POST"])
def job_upload(request: HttpRequest) -> HttpResponse:
    """A DoPQ zip: checked, then its image is built on the host before the job may start."""
    upload_form = JobUploadForm(request.POST, request.FILES, user=request.user)
    if upload_form.is_valid():
        data = upload_form.cleaned_data
        try:
            job = job_submit_upload(
                user=request.user,
                upload=data["upload"].read(),
                host=data["host"],
                cpus=data["cpus"],
                time_limit_minutes=data["time_limit_minutes"],
            )
        except ValidationError as error:
            upload_form.add_service_error(error)
        else:
            messages.success(request, _("Job #%(pk)s is queued; its image is being built.") % {"pk": job.pk})
            return redirect("job-detail", pk=job.pk)
    return _render_submit(request, form=JobForm(user=request.user), upload_form=upload_form)


@login_required
@require_safe
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _owned_job(request, pk)
    if job.status == Job.Status.QUEUED:
        job.position = selectors.queue_positions(now=timezone.now()).get(job.pk)
    context = {
        "job": job,
        "log": logs.log_tail(job_id=job.pk, lines=_tail_lines(request)),
        "build": getattr(job, "build", None),
        "build_log": logs.log_tail(job_id=job.pk, lines=_tail_lines(request), build=True),
        "events": job.reservation.events.order_by("-created_at", "-id")[:50] if job.reservation else [],
        **_outputs(job),
    }
    return render(request, "jobs/job_detail.html", context)


def _outputs(job: Job) -> dict:
    """Where the job's outputs (Work/jobs/<id>, its $JOB_OUTPUT) can be fetched from here."""
    host = job.reservation.host if job.reservation else None
    if host is None or not job.started_at:
        return {"outputs_host": None}
    reachable = files.work_reachable(host)
    return {
        "outputs_host": host,
        "outputs_reachable": reachable,
        "outputs_browse": browse_url(host, files.job_output_path(job.pk)) if reachable else "",
    }


@login_required
@require_safe
def job_outputs_zip(request: HttpRequest, pk: int) -> HttpResponse:
    job = _owned_job(request, pk)
    if job.reservation is None:
        raise Http404
    return zip_response(
        host=job.reservation.host,
        username=request.user.username,
        path=files.job_output_path(job.pk),
        filename=f"job-{job.pk}-outputs.zip",
    )


def _tail_lines(request: HttpRequest) -> int:
    text = request.GET.get("tail", "")
    lines = int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else settings.JOB_LOG_TAIL_LINES
    return min(lines, 10_000)


# The job page's parts the log's poll refreshes (templates/jobs/_job_state.html).
LIVE_PARTS = ("status", "notice", "started", "finished", "exit_code", "actions")


@login_required
@require_safe
def job_log_tail(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of the job page: status and the log's last lines, polled while it runs."""
    job = _owned_job(request, pk)
    context = {
        "job": job,
        "log": logs.log_tail(job_id=job.pk, lines=_tail_lines(request)),
        "live_parts": LIVE_PARTS,
    }
    # htmx stops polling on 286, after swapping this last answer in.
    return render(request, "jobs/_job_live.html", context, status=286 if job.is_finished else 200)


@login_required
@require_safe
def job_log_download(request: HttpRequest, pk: int) -> FileResponse:
    job = _owned_job(request, pk)
    handle = logs.log_open(job_id=job.pk)
    if handle is None:
        raise Http404
    return FileResponse(
        handle, as_attachment=True, filename=f"job-{job.pk}.log", content_type="text/plain; charset=utf-8"
    )


@login_required
@require_http_methods(["GET", "POST"])
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _owned_job(request, pk)
    if request.method == "POST":
        try:
            job_cancel(job=job, now=timezone.now())
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        else:
            messages.success(request, _("Job #%(pk)s was cancelled.") % {"pk": job.pk})
        return redirect("job-detail", pk=job.pk)
    return render(request, "jobs/job_confirm_cancel.html", {"job": job})


@login_required
@require_POST
def job_hold_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _owned_job(request, pk)
    try:
        job_hold(job=job, by=request.user, now=timezone.now())
    except ValidationError as error:
        for message in error.messages:
            messages.error(request, message)
    else:
        messages.success(
            request, _("Job #%(pk)s is held: it starts only once you release it.") % {"pk": job.pk}
        )
    return redirect("job-detail", pk=job.pk)


@login_required
@require_POST
def job_release_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _owned_job(request, pk)
    try:
        job_release(job=job)
    except ValidationError as error:
        for message in error.messages:
            messages.error(request, message)
    else:
        messages.success(
            request, _("Job #%(pk)s is released: it waits at its place in the queue.") % {"pk": job.pk}
        )
    return redirect("job-detail", pk=job.pk)
