"""What every request's log lines need: an id, the client's address by the portal's one
rule, and the user once known. They go into the request's WSGI environ, where gunicorn's
access log reads them (deploy/gunicorn.conf.py: `%({aivc.client}e)s`), so the access log
shows the real client behind nginx and the user without any header leaving the process."""

import uuid

from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

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
