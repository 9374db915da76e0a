from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST
from django.views.i18n import set_language

from accounts.channel_services import calendar_feed_reset, calendar_feed_token, email_kinds_set
from accounts.forms import (
    ApiTokenForm,
    EmailKindsForm,
    ForwardPortForm,
    LimitRequestForm,
    LoginForm,
    ProfileForm,
)
from accounts.grant_selectors import active_grants_for_user, limit_requests_for_user
from accounts.grant_services import limit_request_create
from accounts.models import ApiToken
from accounts.notification_selectors import email_kinds_for_user, notifications_for_user
from accounts.notification_services import notifications_mark_read
from accounts.services import user_change_password, user_set_language, user_update_profile
from accounts.token_services import api_token_create, api_token_revoke
from bookings.services import as_id, forward_port_change


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm

    def get_context_data(self, **kwargs) -> dict:
        return super().get_context_data(**kwargs) | {
            "directory_logins": bool(settings.LDAP_SERVER_URI),
            "directory_creates_accounts": not getattr(settings, "AUTH_LDAP_NO_NEW_USERS", True),
        }


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """The one-time link mailed to an account made in bulk (user_send_set_password_link):
    Django's reset-token check, then the login page."""

    template_name = "accounts/set_password.html"
    success_url = reverse_lazy("login")

    def form_valid(self, form):
        messages.success(self.request, _("Your password is set; log in with it."))
        return super().form_valid(form)


@require_POST
def switch_language(request: HttpRequest) -> HttpResponse:
    """Django's language switch, which also stores the choice of a signed-in user, so their
    mails and notices follow it."""
    response = set_language(request)
    if request.user.is_authenticated:
        user_set_language(user=request.user, language=request.POST.get("language", ""))
    return response


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
    """A service's error on the form: per field when it names fields, else above the form
    (a plain ValidationError has no `message_dict`: reading it was a 500)."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, field_messages in error.message_dict.items():
        for message in field_messages:
            form.add_error(field if field in form.fields else None, message)


def _profile_context(request: HttpRequest, **forms) -> dict:
    user = request.user
    context = {
        "profile_form": ProfileForm.for_user(user),
        "port_form": ForwardPortForm.for_user(user),
        "token_form": ApiTokenForm.for_user(),
        "email_form": EmailKindsForm.for_user(email_kinds_for_user(user_id=user.pk)),
        "tokens": ApiToken.objects.filter(user=user).order_by("-created_at", "-id")[:50],
        "calendar_url": request.build_absolute_uri(
            reverse("calendar-feed", kwargs={"token": calendar_feed_token(user=user)})
        ),
        "port_range": f"{settings.PORT_RANGE.start}-{settings.PORT_RANGE.stop - 1}",
        "now": timezone.now(),
    }
    return context | forms


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    """Several forms on one page; the submit button's name says which one was sent."""
    sent = request.POST.get("action") if request.method == "POST" else None
    handler = PROFILE_ACTIONS.get(sent)
    if handler is not None:
        return handler(request)
    return render(request, "accounts/profile.html", _profile_context(request))


def _save_settings(request: HttpRequest) -> HttpResponse:
    form = ProfileForm.for_user(request.user, request.POST)
    if form.is_valid():
        try:
            user_update_profile(user=request.user, **form.cleaned_data)
        except ValidationError as error:
            _show_errors(form, error)
        else:
            messages.success(request, _("Your settings were saved."))
            return redirect("profile")
    return render(request, "accounts/profile.html", _profile_context(request, profile_form=form))


def _change_port(request: HttpRequest) -> HttpResponse:
    form = ForwardPortForm.for_user(request.user, request.POST)
    if form.is_valid():
        try:
            forward_port_change(user=request.user, port=form.cleaned_data["forward_port"])
        except ValidationError as error:
            _show_errors(form, error)
        else:
            messages.success(request, _("Your forward port was changed; your upcoming bookings use it too."))
            return redirect("profile")
    return render(request, "accounts/profile.html", _profile_context(request, port_form=form))


def _create_token(request: HttpRequest) -> HttpResponse:
    """The token is shown in this one answer and never again (only its hash is kept)."""
    form = ApiTokenForm.for_user(request.POST)
    new_token = None
    if form.is_valid():
        now = timezone.now()
        try:
            _token, new_token = api_token_create(
                user=request.user,
                name=form.cleaned_data["name"],
                expires_at=now + timedelta(days=form.cleaned_data["expires_in_days"]),
                scope=form.cleaned_data["scope"],
                now=now,
            )
        except ValidationError as error:
            _show_errors(form, error)
        else:
            form = ApiTokenForm.for_user()
    context = _profile_context(request, token_form=form, new_token=new_token)
    response = render(request, "accounts/profile.html", context)
    response["Cache-Control"] = "no-store"
    return response


def _revoke_token(request: HttpRequest) -> HttpResponse:
    token_id = as_id(request.POST.get("token", ""))
    token = ApiToken.objects.filter(user=request.user, pk=token_id).first() if token_id else None
    if token is None:
        raise Http404
    api_token_revoke(token=token)
    messages.success(request, _("The token “%(name)s” was revoked.") % {"name": token.name})
    return redirect("profile")


def _save_email_kinds(request: HttpRequest) -> HttpResponse:
    form = EmailKindsForm.for_user([], request.POST)
    if form.is_valid():
        email_kinds_set(user=request.user, kinds=form.cleaned_data["email_kinds"])
        messages.success(request, _("Your e-mail choices were saved."))
        return redirect("profile")
    return render(request, "accounts/profile.html", _profile_context(request, email_form=form))


def _reset_calendar(request: HttpRequest) -> HttpResponse:
    calendar_feed_reset(user=request.user)
    messages.success(request, _("Your calendar feed has a new address; the old one no longer works."))
    return redirect("profile")


PROFILE_ACTIONS = {
    "profile": _save_settings,
    "port": _change_port,
    "token-create": _create_token,
    "token-revoke": _revoke_token,
    "email-kinds": _save_email_kinds,
    "calendar-reset": _reset_calendar,
}


@login_required
@require_http_methods(["GET", "POST"])
def notifications(request: HttpRequest) -> HttpResponse:
    """The in-portal list, newest first; POST marks them all read."""
    if request.method == "POST":
        notifications_mark_read(user=request.user)
        return redirect("notifications")
    rows = notifications_for_user(user_id=request.user.pk)[:100]
    return render(request, "accounts/notifications.html", {"notifications": rows})


@login_required
@require_http_methods(["GET", "POST"])
def limit_requests(request: HttpRequest) -> HttpResponse:
    """Ask for more (a bigger budget or caps, another profile, a priority boost) until a day;
    the requests asked before, with their answers, and what is granted now."""
    form = LimitRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            limit_request_create(user=request.user, now=timezone.now(), **form.cleaned_data)
        except ValidationError as error:
            _show_errors(form, error)
        else:
            messages.success(request, _("Your request was sent; you are told when a maintainer answers."))
            return redirect("limit-requests")
    context = {
        "form": form,
        "requests": limit_requests_for_user(user_id=request.user.pk)[:50],
        "grants": active_grants_for_user(user_id=request.user.pk, now=timezone.now()),
    }
    return render(request, "accounts/limit_requests.html", context)
