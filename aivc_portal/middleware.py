"""Project-wide request fences that belong to no app."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.translation import gettext as _

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
        form = request.POST if request.content_type in FORM_TYPES else {}
        if _carries_nul(request.GET) or (form and _carries_nul(form)):
            return HttpResponseBadRequest(_("The request contains a NUL character, which no field accepts."))
        return self.get_response(request)


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
