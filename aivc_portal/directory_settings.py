"""The django-auth-ldap settings (`AUTH_LDAP_*`) for a university directory, built from the
portal's own `LDAP_*` variables (docs/ldap.md). Imported by settings.py only when
LDAP_SERVER_URI is set, since python-ldap is an optional, compiled dependency."""

from django.core.exceptions import ImproperlyConfigured


def directory_settings(
    *,
    server_uri: str,
    bind_dn: str,
    bind_password: str,
    search_base: str,
    user_filter: str,
    create_users: bool,
    start_tls: bool,
    timeout: int,
) -> dict:
    try:
        import ldap
        from django_auth_ldap.config import LDAPSearch
    except ImportError as error:
        raise ImproperlyConfigured(
            "LDAP_SERVER_URI is set but python-ldap or django-auth-ldap is not installed: "
            "apt-get install libldap2-dev libsasl2-dev gcc python3-dev, then "
            "pip install -r requirements-ldap.txt (docs/ldap.md)."
        ) from error
    if not server_uri.startswith(("ldap://", "ldaps://", "ldapi://")):
        raise ImproperlyConfigured(
            f"LDAP_SERVER_URI={server_uri!r} is not an ldap://, ldaps:// or ldapi:// address."
        )
    if not search_base:
        raise ImproperlyConfigured(
            "LDAP_USER_SEARCH_BASE must name where the accounts are, e.g. ou=people,dc=uni,dc=edu."
        )
    if "%(user)s" not in user_filter:
        raise ImproperlyConfigured(
            f"LDAP_USER_FILTER={user_filter!r} must contain %(user)s, e.g. (uid=%(user)s)."
        )
    return {
        "AUTH_LDAP_SERVER_URI": server_uri,
        "AUTH_LDAP_BIND_DN": bind_dn,
        "AUTH_LDAP_BIND_PASSWORD": bind_password,
        "AUTH_LDAP_USER_SEARCH": LDAPSearch(search_base, ldap.SCOPE_SUBTREE, user_filter),
        "AUTH_LDAP_START_TLS": start_tls,
        # A directory that hangs must not hold a web worker: connect and each operation.
        "AUTH_LDAP_CONNECTION_OPTIONS": {ldap.OPT_NETWORK_TIMEOUT: timeout, ldap.OPT_TIMEOUT: timeout},
        "AUTH_LDAP_USER_ATTR_MAP": {"first_name": "givenName", "last_name": "sn", "email": "mail"},
        # Off: only accounts that maintainers created or imported log in, as with passwords.
        "AUTH_LDAP_NO_NEW_USERS": not create_users,
    }
