from axes.backends import AxesStandaloneBackend


class LoginThrottleBackend(AxesStandaloneBackend):
    """Refuses logins for a locked-out account or address (django-axes), before any
    password is checked. Every login over HTTP passes its request; a call without one
    (the test client, a shell) has no address to count and is left to ModelBackend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
