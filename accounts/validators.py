"""Which account ids the portal accepts. An id names the user's folders on every GPU
server, their container (`aivc-<id>`, also its host name) and a Linux-style account, so
only ids that work as all of these are created: lower-case ASCII letters and digits, then
also `_`, `.`, `-`, never first (a leading `.` hides a folder or makes `..`; a leading `-`
reads as an option). `+`, `@` and non-ASCII letters, which Django's own username validator
allows, can never get a container."""

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

ACCOUNT_ID_MAX_LENGTH = 32  # a Linux user name; also keeps `aivc-<id>` a valid host name
ACCOUNT_ID_PATTERN = r"[a-z0-9][a-z0-9_.-]*"


def validate_account_id(value: str) -> None:
    if len(value) > ACCOUNT_ID_MAX_LENGTH:
        raise ValidationError(
            _("The account id %(id)s… is longer than %(max)d characters."),
            code="account_id_too_long",
            params={"id": value[:20], "max": ACCOUNT_ID_MAX_LENGTH},
        )
    if not re.fullmatch(ACCOUNT_ID_PATTERN, value):
        raise ValidationError(
            _(
                "The account id %(id)s is not usable: use lower-case letters a-z and digits, "
                "then also _ . or -, starting with a letter or digit."
            ),
            code="account_id_invalid",
            params={"id": value},
        )
