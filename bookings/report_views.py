"""Usage reports for staff: a page with a date range and two CSV downloads."""

from collections.abc import Callable, Iterator
from datetime import datetime
from functools import wraps

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from bookings.limits import usage_of_active_users
from bookings.reports import USAGE_COLUMNS, ReportRange, csv_bytes, reservations_csv_bytes, usage_rows
from bookings.timeslots import MAX_AHEAD, YEARS
from containers.telemetry.selectors import gpu_hours_busy_by_user

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
    busy = gpu_hours_busy_by_user(report_range.start, report_range.end)
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
