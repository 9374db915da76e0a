"""Logins checked against the university directory (django-auth-ldap), on when
LDAP_SERVER_URI is set (docs/ldap.md). Imported only then: python-ldap is optional."""

import logging

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django_auth_ldap.backend import LDAPBackend, ldap_error

from accounts.backends import DIRECTORY_DOWN_ATTRIBUTE
from accounts.services import normalise_username

logger = logging.getLogger(__name__)


class DirectoryBackend(LDAPBackend):
    """The account id is the lab id, lower-cased, as for local accounts. A deactivated
    account stays out even with a right directory password. The first directory login of an
    account still on its one-time local password (a maintainer's reset or an import) retires
    that password: the directory's is the account's password from then on."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        try:
            username = normalise_username(username or "")
        except ValidationError:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)

    def authenticate_ldap_user(self, ldap_user, password):
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is None or not user.is_active:
            return None
        if user.must_change_password:
            user.set_unusable_password()
            user.must_change_password = False
            user.save(update_fields=["password", "must_change_password"])
        return user

    def get_or_build_user(self, username, ldap_user):
        model = get_user_model()
        user = model.objects.filter(username=username).first()
        if user is not None:
            return user, False
        return model(username=username), True


def _directory_unavailable(sender, context, user, request, exception, **kwargs) -> None:
    """django-auth-ldap reports an unreachable or refusing directory here and then answers
    "no such user"; the request remembers it so the login page can say what happened. Only
    the error's class is logged: nothing of the bind credentials."""
    if request is not None:
        setattr(request, DIRECTORY_DOWN_ATTRIBUTE, True)
    logger.warning("The directory could not be asked (%s): %s", context, type(exception).__name__)


ldap_error.connect(_directory_unavailable, sender=DirectoryBackend, dispatch_uid="aivc-directory-unavailable")
