from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from accounts.forms import ForwardPortForm, ProfileForm
from accounts.services import user_change_password, user_update_profile
from bookings.services import forward_port_change


@login_required
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = user_change_password(user=request.user, new_password=form.cleaned_data["new_password1"])
        except ValidationError as error:
            form.add_error("new_password2", error)
        else:
            update_session_auth_hash(request, user)
            messages.success(request, _("Your password was changed."))
            return redirect("dashboard")
    forced = request.user.must_change_password
    return render(request, "accounts/password_change.html", {"form": form, "forced": forced})


def _show_errors(form, error: ValidationError) -> None:
    for field, field_messages in error.message_dict.items():
        for message in field_messages:
            form.add_error(field if field in form.fields else None, message)


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    """Two forms on one page; the submit button's name says which one was sent."""
    user = request.user
    sent = request.POST.get("action") if request.method == "POST" else None
    profile_form = ProfileForm.for_user(user, request.POST if sent == "profile" else None)
    port_form = ForwardPortForm.for_user(user, request.POST if sent == "port" else None)
    if sent == "profile" and profile_form.is_valid():
        try:
            user_update_profile(user=user, **profile_form.cleaned_data)
        except ValidationError as error:
            _show_errors(profile_form, error)
        else:
            messages.success(request, _("Your settings were saved."))
            return redirect("profile")
    elif sent == "port" and port_form.is_valid():
        try:
            forward_port_change(user=user, port=port_form.cleaned_data["forward_port"])
        except ValidationError as error:
            _show_errors(port_form, error)
        else:
            messages.success(request, _("Your forward port was changed; your upcoming bookings use it too."))
            return redirect("profile")
    context = {
        "profile_form": profile_form,
        "port_form": port_form,
        "port_range": f"{settings.PORT_RANGE.start}-{settings.PORT_RANGE.stop - 1}",
    }
    return render(request, "accounts/profile.html", context)
