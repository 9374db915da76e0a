"""`Authorization: Bearer aivc_…` for scripts and the `aivc` client."""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from accounts.models import ApiToken
from accounts.throttling import client_ip
from accounts.token_services import api_token_authenticate

READ_ONLY_TOKEN = _("This token may only read; make one that may book on your profile page.")
SESSION_ONLY = _(
    "%(what)s needs a logged-in browser session on the portal, never a token "
    "(a leaked token must not be able to keep itself alive or reach your container)."
)


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(_("Send the header as 'Authorization: Bearer <token>'."))
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        token = api_token_authenticate(raw=raw, address=client_ip(request._request))
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid, expired or revoked token."))
        if token.user.must_change_password:
            # As on the pages: after a maintainer's reset, nothing works until the change.
            raise exceptions.PermissionDenied(_("Change your password on the portal first."))
        # Checked here rather than in a permission class, so no view can leave it out.
        if token.scope == ApiToken.Scope.READ and request.method not in permissions.SAFE_METHODS:
            raise exceptions.PermissionDenied(READ_ONLY_TOKEN)
        return token.user, token

    def authenticate_header(self, request) -> str:
        # Makes unauthenticated requests answer 401 (with this challenge) rather than 403.
        return 'Bearer realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal access token from the profile page or `aivc login`.",
        }


def came_with_a_token(request) -> bool:
    return isinstance(getattr(request, "auth", None), ApiToken)


def refuse_a_token(request, *, what: str) -> None:
    """For what only the logged-in owner may do (tokens, SSH keys): a token is refused."""
    if came_with_a_token(request):
        raise exceptions.PermissionDenied(SESSION_ONLY % {"what": what})
