import re

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse


class ForcePasswordChangeMiddleware:
    """Sends an account that must change its password to the change form first."""

    ALLOWED_URL_NAMES = ("password_change", "logout", "set_language")
    # The lab proxy's question (containers.lab_views.lab_auth) must get an answer a proxy
    # reads (401), not a redirect; the page it then hands over sends the account here.
    PROXY_QUESTION = re.compile(r"/r/[0-9]+/lab-auth/")

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            user is not None
            and user.is_authenticated
            and user.must_change_password
            and not self.PROXY_QUESTION.fullmatch(request.path)
        ):
            allowed = {reverse(name) for name in self.ALLOWED_URL_NAMES}
            if request.path.startswith("/api/"):
                # A script gets an answer it can read, in the API's one error shape.
                body = {"detail": "Change your password on the portal first.", "code": "password_change"}
                return JsonResponse({**body, "errors": {}}, status=403)
            if request.path not in allowed and not request.path.startswith("/static/"):
                return redirect("password_change")
        return self.get_response(request)
