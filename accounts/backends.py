from axes.backends import AxesStandaloneBackend
from django.utils.translation import gettext_lazy as _


class LoginThrottleBackend(AxesStandaloneBackend):
    """Refuses a paused (account, address) pair or a slowed retry (accounts/throttling.py,
    django-axes), before any password is checked. Every login over HTTP passes its request;
    a call without one (the test client, a shell) has no address to count and is left to
    the backends after it."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


# Set on the request by accounts.directory when the directory could not be asked, so the
# login page and the API say so instead of "wrong password" (kept here: no python-ldap).
DIRECTORY_DOWN_ATTRIBUTE = "aivc_directory_down"


def directory_was_down(request) -> bool:
    return bool(getattr(request, DIRECTORY_DOWN_ATTRIBUTE, False))


DIRECTORY_DOWN_MESSAGE = _(
    "The university directory does not answer, so directory passwords cannot be checked now. "
    "Try again in a few minutes; if it goes on, tell a lab maintainer."
)
