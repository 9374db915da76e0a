"""Usage reports: for staff a page with a date range and two CSV downloads; the usage
page with its charts (staff: everyone; a student: their own) and each chart's CSV."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_safe

from accounts.models import CapabilityProfile
from bookings.limits import usage_for, usage_of_active_users
from bookings.report_charts import Series, grouped_bars, heatmap, horizontal_bars
from bookings.reports import (
    USAGE_COLUMNS,
    ReportRange,
    csv_bytes,
    neutralise,
    reservations_csv_bytes,
    usage_rows,
)
from bookings.timeslots import MAX_AHEAD, YEARS
from bookings.usage import (
    UsageFilter,
    analytic_reads,
    gpu_occupancy,
    top_users,
    weekly_hours,
    weekly_totals,
)
from containers.models import Host
from containers.telemetry.selectors import gpu_hours_busy_by_user_and_kind, gpu_hours_busy_by_user_week
from jobs.selectors import job_waits_by_week

MAX_RANGE_DAYS = 1096  # three years


def staff_required(view: Callable) -> Callable:
    """Anonymous users go to the login page; logged-in users without is_staff get 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("Reports are for staff.")
        return view(request, *args, **kwargs)

    return login_required(wrapper)


class ReportRangeForm(forms.Form):
    """`?from=YYYY-MM-DD&to=YYYY-MM-DD`, both days included, in TIME_ZONE."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        date_input = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
        messages = {"required": "Enter a date.", "invalid": "Enter a date as YYYY-MM-DD."}
        # "from" is a Python keyword, so the fields are added here rather than declared.
        self.fields["from"] = forms.DateField(
            label="From", input_formats=["%Y-%m-%d"], widget=date_input, error_messages=messages
        )
        self.fields["to"] = forms.DateField(
            label="To (included)", input_formats=["%Y-%m-%d"], widget=date_input, error_messages=messages
        )

    def clean(self) -> dict:
        cleaned = super().clean()
        first, last = cleaned.get("from"), cleaned.get("to")
        if first and last:
            if first.year not in YEARS or last.year not in YEARS:
                raise forms.ValidationError(f"Choose dates between {YEARS.start} and {YEARS.stop - 1}.")
            if last < first:
                raise forms.ValidationError("The end date is before the start date.")
            if (last - first).days + 1 > MAX_RANGE_DAYS:
                raise forms.ValidationError(f"A report covers at most {MAX_RANGE_DAYS} days.")
        return cleaned

    def report_range(self) -> ReportRange:
        return ReportRange(first=self.cleaned_data["from"], last=self.cleaned_data["to"])


def _page(request: HttpRequest, form: ReportRangeForm, *, status: int = 200) -> HttpResponse:
    report_range = form.report_range() if form.is_bound and form.is_valid() else None
    context = {"form": form, "range": report_range, "week_usage": usage_of_active_users(now=timezone.now())}
    return render(request, "bookings/reports.html", context, status=status)


@staff_required
@require_safe
def reports(request: HttpRequest) -> HttpResponse:
    if "from" in request.GET or "to" in request.GET:
        form = ReportRangeForm(request.GET)
        return _page(request, form, status=200 if form.is_valid() else 400)
    today = timezone.localdate()
    # This month so far and every booking ahead (a start is at most MAX_AHEAD away).
    initial = {"from": today.replace(day=1), "to": today + MAX_AHEAD}
    form = ReportRangeForm(initial=initial)
    context = {
        "form": form,
        "range": ReportRange(first=initial["from"], last=initial["to"]),
        "week_usage": usage_of_active_users(now=timezone.now()),
    }
    return render(request, "bookings/reports.html", context)


def usage_csv_bytes(*, report_range: ReportRange, now: datetime, bom: bool = False) -> Iterator[bytes]:
    """The usage CSV, with the GPU-hours the telemetry saw busy."""
    busy = gpu_hours_busy_by_user_and_kind(report_range.start, report_range.end)
    rows = usage_rows(report_range=report_range, now=now, gpu_hours_busy=busy)
    return csv_bytes(USAGE_COLUMNS, rows, bom=bom)


def csv_download(
    *, report_range: ReportRange, kind: str, content: Callable, bom: bool
) -> StreamingHttpResponse:
    """A report streamed as a CSV attachment; the pages and the API both answer with it.
    `content` is `reservations_csv_bytes` or `usage_csv_bytes`."""
    pieces = content(report_range=report_range, now=timezone.now(), bom=bom)
    response = StreamingHttpResponse(pieces, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{report_range.file_name(kind)}"'
    response["Cache-Control"] = "private, no-store"
    return response


def _csv_download(request: HttpRequest, *, kind: str, content: Callable) -> HttpResponse:
    form = ReportRangeForm(request.GET)
    if not form.is_valid():
        return _page(request, form, status=400)
    return csv_download(
        report_range=form.report_range(), kind=kind, content=content, bom=request.GET.get("bom") == "1"
    )


@staff_required
@require_safe
def reservations_csv(request: HttpRequest) -> HttpResponse:
    return _csv_download(request, kind="reservations", content=reservations_csv_bytes)


@staff_required
@require_safe
def usage_csv(request: HttpRequest) -> HttpResponse:
    return _csv_download(request, kind="usage", content=usage_csv_bytes)


# The usage page ----------------------------------------------------------------------

USAGE_WEEKS = 12  # the default range: this week and the eleven before it
HELD, RUN, BUSY = (
    Series(_("Booked (held)"), "bar-held"),
    Series(_("Ran"), "bar-run"),
    Series(_("GPUs busy"), "bar-busy"),
)
MEDIAN, P95 = Series(_("Median"), "bar-run"), Series(_("95th percentile"), "bar-held")
# Charts about everyone: staff only. A student's page shows their own hours and waits.
STAFF_CHARTS = ("occupancy", "top-users")
CHARTS = ("weekly", "waits", *STAFF_CHARTS)


class UsageForm(ReportRangeForm):
    """The report range with a host and (for staff) a capability profile."""

    def __init__(self, *args, staff: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["host"] = forms.ModelChoiceField(
            Host.objects.order_by("name"), required=False, label=_("Host"), empty_label=_("All hosts")
        )
        if staff:
            self.fields["profile"] = forms.ModelChoiceField(
                CapabilityProfile.objects.order_by("-is_default", "name"),
                required=False,
                label=_("Profile"),
                empty_label=_("All profiles"),
            )

    def usage_filter(self, *, user) -> UsageFilter:
        data = self.cleaned_data
        host, profile = data.get("host"), data.get("profile")
        return UsageFilter(
            first=data["from"],
            last=data["to"],
            host_id=host.pk if host else None,
            profile_id=profile.pk if profile else None,
            user_id=None if user.is_staff else user.pk,
        )


def _usage_form(request: HttpRequest) -> UsageForm:
    staff = request.user.is_staff
    if "from" in request.GET or "to" in request.GET:
        return UsageForm(request.GET, staff=staff)
    today = timezone.localdate()
    first = today - timedelta(days=today.weekday(), weeks=USAGE_WEEKS - 1)
    return UsageForm({"from": first.isoformat(), "to": today.isoformat()}, staff=staff)


@dataclass(frozen=True)
class WeeklyBudget:
    used: float
    limit: float


def weekly_budget(user, *, now: datetime) -> WeeklyBudget | None:
    """The user's GPU-hours of the last 7 days against their weekly budget, as the booking
    rules count them (bookings/limits.py); None without a budget."""
    usage = usage_for(user=user, now=now)
    if usage.limits.gpu_hours_per_week is None:
        return None
    return WeeklyBudget(used=usage.gpu_hours_week, limit=float(usage.limits.gpu_hours_per_week))


def _chart_data(chart: str, usage_filter: UsageFilter, *, now: datetime):
    if chart == "weekly":
        busy = gpu_hours_busy_by_user_week(usage_filter)
        return weekly_hours(usage_filter, now=now, busy=busy)
    if chart == "waits":
        return job_waits_by_week(usage_filter)
    if chart == "occupancy":
        return gpu_occupancy(usage_filter)
    return top_users(weekly_hours(usage_filter, now=now))


def _bucket_label(bucket) -> str:
    return f"{timezone.localtime(bucket.start):%m-%d}"


@login_required
@require_safe
def usage(request: HttpRequest) -> HttpResponse:
    """Staff: everyone's hours, the GPUs' occupancy, job waits, the top users. A student:
    their own hours and waits."""
    form = _usage_form(request)
    staff = request.user.is_staff
    context = {"form": form, "staff": staff, "charts": {}}
    if not form.is_valid():
        return render(request, "bookings/usage.html", context, status=400)
    usage_filter = form.usage_filter(user=request.user)
    now = timezone.now()
    with analytic_reads():
        weeks = _chart_data("weekly", usage_filter, now=now)
        waits = _chart_data("waits", usage_filter, now=now)
        occupancy = gpu_occupancy(usage_filter) if staff else None
    totals = weekly_totals(weeks)
    charts = {
        "weekly": grouped_bars(
            [(f"{t.week:%m-%d}", (t.gpu_hours_held, t.gpu_hours_run, t.gpu_hours_busy)) for t in totals],
            series=(HELD, RUN, BUSY),
            unit=_("GPU-hours"),
            label=_("GPU-hours held, run and busy per week"),
        ),
        "waits": grouped_bars(
            [(f"{w.week:%m-%d}", (w.median_hours, w.p95_hours)) for w in waits],
            series=(MEDIAN, P95),
            unit=_("hours"),
            label=_("Job waits per week"),
        ),
    }
    context.update(
        charts=charts,
        weeks=weeks,
        totals=totals,
        waits=waits,
        query=request.GET.urlencode() if request.GET else form_query(form),
        budget=weekly_budget(request.user, now=now),
    )
    if staff:
        leaders = top_users(weeks)
        charts["occupancy"] = heatmap(
            [(row.label, [occupancy.share(row, c) for c in range(len(row.hours))]) for row in occupancy.rows],
            columns=[_bucket_label(bucket) for bucket in occupancy.buckets],
            label=_("Share of each GPU's time held, per day or week"),
        )
        charts["top_users"] = horizontal_bars(
            [(leader.username, leader.gpu_hours_run) for leader in leaders],
            unit=_("GPU-hours"),
            label=_("Top users by GPU-hours run"),
        )
        context.update(occupancy=occupancy, leaders=leaders)
    return render(request, "bookings/usage.html", context)


def form_query(form: UsageForm) -> str:
    return f"from={form.cleaned_data['from']:%Y-%m-%d}&to={form.cleaned_data['to']:%Y-%m-%d}"


def _iso(moment: datetime) -> str:
    return timezone.localtime(moment).isoformat(timespec="seconds")


def chart_rows(chart: str, data) -> tuple[tuple[str, ...], Iterator[list]]:
    """A chart's numbers as CSV columns and rows."""
    if chart == "weekly":
        header = (
            "week",
            "user",
            "hours_held",
            "hours_run",
            "gpu_hours_held",
            "gpu_hours_run",
            "gpu_hours_busy",
        )
        rows = (
            [
                w.week.isoformat(),
                neutralise(w.username),
                *(f"{v:.2f}" for v in (w.hours_held, w.hours_run, w.gpu_hours_held, w.gpu_hours_run)),
                f"{w.gpu_hours_busy:.2f}",
            ]
            for w in data
        )
    elif chart == "waits":
        header = ("week", "jobs_started", "median_wait_hours", "p95_wait_hours")
        rows = ([w.week.isoformat(), w.jobs, f"{w.median_hours:.3f}", f"{w.p95_hours:.3f}"] for w in data)
    elif chart == "occupancy":
        header = ("host", "gpu_index", "from", "to", "hours_held", "share_held")
        rows = (
            [
                neutralise(row.host_name),
                row.index,
                _iso(bucket.start),
                _iso(bucket.end),
                f"{row.hours[c]:.2f}",
                f"{data.share(row, c):.4f}",
            ]
            for row in data.rows
            for c, bucket in enumerate(data.buckets)
        )
    else:
        header = ("user", "gpu_hours_run", "gpu_hours_held", "reservations")
        rows = (
            [neutralise(t.username), f"{t.gpu_hours_run:.2f}", f"{t.gpu_hours_held:.2f}", t.reservations]
            for t in data
        )
    return header, rows


@login_required
@require_safe
def usage_chart_csv(request: HttpRequest, chart: str) -> HttpResponse:
    """One chart's numbers, for the same selection (query string) as the page."""
    if chart not in CHARTS:
        raise Http404("No such chart.")
    if chart in STAFF_CHARTS and not request.user.is_staff:
        raise PermissionDenied("This chart is for staff.")
    form = _usage_form(request)
    if not form.is_valid():
        return render(request, "bookings/usage.html", {"form": form, "charts": {}}, status=400)
    usage_filter = form.usage_filter(user=request.user)
    with analytic_reads():
        data = _chart_data(chart, usage_filter, now=timezone.now())
    header, rows = chart_rows(chart, data)
    response = StreamingHttpResponse(
        csv_bytes(header, rows, bom=request.GET.get("bom") == "1"), content_type="text/csv; charset=utf-8"
    )
    name = f"aivc-usage-{chart}_{usage_filter.first:%Y-%m-%d}_{usage_filter.last:%Y-%m-%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    return response
