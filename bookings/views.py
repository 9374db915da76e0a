from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from bookings.selectors import reservations_for_user


@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    reservations = reservations_for_user(user_id=request.user.pk)
    return render(request, "bookings/dashboard.html", {"reservations": reservations})
