from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import translation


class ForcePasswordChangeMiddleware:
    """Sends an account that must change its password to the change form first."""

    ALLOWED_URL_NAMES = ("password_change", "logout", "set_language")

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.must_change_password:
            allowed = {reverse(name) for name in self.ALLOWED_URL_NAMES}
            if request.path.startswith("/api/"):
                # A script gets an answer it can read, in the API's one error shape.
                body = {"detail": "Change your password on the portal first.", "code": "password_change"}
                return JsonResponse({**body, "errors": {}}, status=403)
            if request.path not in allowed and not request.path.startswith("/static/"):
                return redirect("password_change")
        return self.get_response(request)


class UserLanguageMiddleware:
    """A signed-in user's stored language wins over the browser's and the cookie's, so the
    pages match the mails and notices written to them (accounts.User.language). Runs after
    AuthenticationMiddleware. The language is overridden for this request only: the thread
    (a worker, a test) goes back to its own language after the response."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        language = getattr(user, "language", "") if user is not None and user.is_authenticated else ""
        if not language:
            return self.get_response(request)
        with translation.override(language):
            request.LANGUAGE_CODE = translation.get_language()
            response = self.get_response(request)
        # LocaleMiddleware, above, only fills the header when it is missing.
        response.headers.setdefault("Content-Language", request.LANGUAGE_CODE)
        return response
