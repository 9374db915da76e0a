from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from containers.telemetry.selectors import gpu_gaps, gpu_table


@login_required
@require_safe
def gpu_status(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    context = {"gpu_table": gpu_table(now=now), "gpu_gaps": gpu_gaps(now=now)}
    return render(request, "telemetry/gpu_status.html", context)
