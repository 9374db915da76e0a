"""Project-wide middleware that belongs to no app.

What every request's log lines need: an id, the client's address by the portal's one
rule, and the user once known. They go into the request's WSGI environ, where gunicorn's
access log reads them (deploy/gunicorn.conf.py: `%({aivc.client}e)s`), so the access log
shows the real client behind nginx and the user without any header leaving the process.

A NUL in a query string or a posted form is refused before any view runs."""

import uuid
from collections.abc import Callable

from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.translation import gettext as _

from accounts.throttling import client_ip
from aivc_portal.logs import current_request, known_username


class RequestContextMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = uuid.uuid4().hex[:16]
        request.META["aivc.request_id"] = request_id
        request.META["aivc.client"] = client_ip(request) or "-"
        current_request.set(request)
        try:
            response = self.get_response(request)
        finally:
            request.META["aivc.user"] = known_username(request) or "-"
        # Quoted by a user who reports an error, it finds the request's lines in the logs.
        response["X-Request-ID"] = request_id
        return response


@receiver(request_finished)
def _forget_request(**kwargs) -> None:
    # Not at the middleware's return: Django logs a 4xx/5xx line after that.
    current_request.set(None)


NUL = "\x00"


def _carries_nul(data) -> bool:
    return any(NUL in key or any(NUL in value for value in data.getlist(key)) for key in data)


class RefuseNulCharacters:
    """A NUL in a query string or a posted form is refused with 400 before any view runs.
    No field of the portal can hold one, and PostgreSQL refuses it in any text it is sent,
    so an admin filter such as `?username=%00` answered 500 instead of an error."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable, view_args, view_kwargs
    ) -> HttpResponse | None:
        # A view that limits its own upload reads the body itself: reading it here first
        # would parse the whole upload before its limit is in place (and make the view's
        # own handlers fail). Such a view checks its form fields for NUL itself.
        reads_body = request.content_type in FORM_TYPES and not getattr(view_func, "limits_its_upload", False)
        form = request.POST if reads_body else {}
        if _carries_nul(request.GET) or (form and _carries_nul(form)):
            message = _("The request contains a NUL character, which no field accepts.")
            if request.path.startswith("/api/"):  # the API's one error body (aivc_portal.api)
                return JsonResponse({"detail": message, "code": "nul_character", "errors": {}}, status=400)
            return HttpResponseBadRequest(message)
        return None


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
