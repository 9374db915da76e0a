"""Login throttling, built on django-axes (see docs/security.md for why axes rather than a
cache of our own: its counts live in the database, so every gunicorn worker and the admin
see the same numbers, and a maintainer unlocks an account from admin).

A locked-out attempt is refused by the authentication backend before the password is
hashed, so a flood of wrong passwords costs a few queries each, not an Argon2 hash."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def login_username(request: HttpRequest, credentials: dict | None) -> str:
    """The account id as the portal looks it up (trimmed, lower-case), so `Alice` and
    `alice ` count against the same account."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    return username.strip().lower()


def client_ip(request: HttpRequest) -> str:
    """The client's address. Behind the TLS proxy every request comes from the proxy, so
    the address the proxy saw is taken: nginx appends it last to X-Forwarded-For
    (`$proxy_add_x_forwarded_for`); what a client wrote earlier in that header is ignored."""
    if settings.BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "")


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """The login page's answer while locked out: what happened, for how long, who can help.
    The API's password login (`aivc login`) gets the same refusal in the API's error shape."""
    if request.path.startswith("/api/"):
        detail = (
            f"Too many failed logins: logging in is paused for {settings.LOGIN_LOCKOUT_MINUTES} minutes; "
            "a maintainer can unlock it sooner."
        )
        return JsonResponse({"detail": detail, "code": "locked_out", "errors": {}}, status=429)
    context = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cooloff_minutes": settings.LOGIN_LOCKOUT_MINUTES,
    }
    return render(request, "accounts/locked_out.html", context, status=429)
