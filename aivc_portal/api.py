"""What every app's API shares: one error body, pagination, per-token throttling, the
time-input field and the staff permission. Each app keeps its own endpoints in `api.py`."""

import hashlib
from datetime import datetime

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import exceptions, pagination, permissions, serializers, throttling
from rest_framework.response import Response
from rest_framework.settings import api_settings

from accounts.throttling import client_ip

NON_FIELD = "non_field_errors"


def _flatten(errors: object) -> list[str]:
    if isinstance(errors, dict):
        return [message for value in errors.values() for message in _flatten(value)]
    if isinstance(errors, list | tuple):
        return [message for value in errors for message in _flatten(value)]
    return [str(errors)]


def _field_errors(detail: object) -> dict[str, list[str]]:
    """DRF's nested error detail as {field: [messages]}; nested fields are dotted."""
    if isinstance(detail, dict):
        result: dict[str, list[str]] = {}
        for field, value in detail.items():
            if isinstance(value, dict):
                for inner, messages in _field_errors(value).items():
                    result[f"{field}.{inner}"] = messages
            else:
                result[str(field)] = _flatten(value)
        return result
    return {NON_FIELD: _flatten(detail)}


def _django_errors(error: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {
            (NON_FIELD if field == "__all__" else field): messages
            for field, messages in error.message_dict.items()
        }
    return {NON_FIELD: error.messages}


def _django_code(error: DjangoValidationError) -> str:
    """The code of the first error, which a script can branch on (e.g. `no_capacity`)."""
    inner = (
        [item for items in error.error_dict.values() for item in items]
        if hasattr(error, "error_dict")
        else []
    )
    inner = inner or getattr(error, "error_list", [])
    codes = [getattr(item, "code", None) for item in inner] + [getattr(error, "code", None)]
    return next((code for code in codes if code), "invalid")


def error_body(*, detail: str, code: str, errors: dict[str, list[str]] | None = None) -> dict:
    return {"detail": detail, "code": code, "errors": errors or {}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Every error answers {"detail": str, "code": str, "errors": {field: [messages]}}.
    Services raise Django's ValidationError with the same messages the pages show; it
    becomes a 400 here, so API views stay as thin as the page views."""
    if isinstance(exc, DjangoValidationError):
        errors = _django_errors(exc)
        code = _django_code(exc)
        return Response(error_body(detail=" ".join(_flatten(errors)), code=code, errors=errors), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    # Imported here: rest_framework.views reads DEFAULT_THROTTLE_CLASSES, which names this
    # module's PerTokenThrottle, so importing it at the top made a cycle whenever this module
    # was the first to load DRF's views (gunicorn's workers failed to boot).
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        codes = exc.get_codes()
        first_code = next(iter(_flatten(codes)), "invalid") if codes else "invalid"
        response.data = error_body(detail=" ".join(_flatten(errors)), code=first_code, errors=errors)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = error_body(detail=str(detail), code=str(code))
    return response


ERROR_SCHEMA = inline_serializer(
    name="Error",
    fields={
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        "errors": serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
    },
)


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """Error responses for an operation's schema, all with the one error body. The schema
    class (api_schema.ApiSchema) adds 400/401/403/404/429 to every operation anyway."""
    return {status: OpenApiResponse(ERROR_SCHEMA) for status in statuses}


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class PerTokenThrottle(throttling.UserRateThrottle):
    """Counts requests per personal access token (a leaked token cannot exhaust its owner's
    browser session), per user for sessions, per address for anonymous requests."""

    scope = "user"

    def get_rate(self) -> str | None:
        # Read at each request, not at import, so the rates follow the settings.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_ident(self, request) -> str:
        # DRF's own reads X-Forwarded-For as the client wrote it, so a client that writes a
        # new address each time is never counted twice; the portal decides the address once.
        return client_ip(request)

    def get_cache_key(self, request, view) -> str:
        token = request.auth
        if token is not None and hasattr(token, "prefix"):
            ident = f"token-{token.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"anon-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginThrottle(PerTokenThrottle):
    """Password logins that create a token: few per account and address, against guessing.
    Counted per pair like the login pause (accounts/throttling.py), so a flood from a shared
    address (a campus NAT) never uses up a classmate's tries."""

    scope = "token_login"

    def get_cache_key(self, request, view) -> str:
        data = request.data if isinstance(request.data, dict) else {}
        username = str(data.get("username") or "").strip().lower()
        account = hashlib.sha256(username.encode(errors="replace")).hexdigest()[:32]
        ident = f"anon-{self.get_ident(request)}-{account}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class IsStaff(permissions.BasePermission):
    message = "This is for staff."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class TimeInputField(serializers.CharField):
    """A start or end as the form and the old CLI take it: `now`, `N-day`, `N-week`,
    `YYYY MM DD hh mm` (local time), or an ISO 8601 date-time. ISO text becomes a datetime;
    everything else reaches the booking service as text, which checks it."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)

    def run_validation(self, data: object = serializers.empty) -> datetime | str:
        text = super().run_validation(data)
        if not isinstance(text, str):
            return text
        try:
            moment = parse_datetime(text.strip())
        except ValueError:
            raise serializers.ValidationError("Wrong Input! Not a real date or time.") from None
        if moment is None:
            return text
        return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


@csrf_exempt  # It changes nothing; CSRF's HTML 403 would hide the JSON 404.
def api_not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """Any /api/ path no endpoint matches: a 404 in the API's error shape, not a page."""
    return JsonResponse(error_body(detail="Not found.", code="not_found"), status=404)
