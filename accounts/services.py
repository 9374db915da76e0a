import secrets
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import CapabilityProfile, User

# Letters and digits without look-alikes (0/O, 1/l/I) so a printed password reads back.
_GENERATED_CHARACTERS = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def generate_password(length: int = 12) -> str:
    return "".join(secrets.choice(_GENERATED_CHARACTERS) for _ in range(length))


def normalise_username(username: str) -> str:
    username = (username or "").strip().lower()
    if not username:
        raise ValidationError("An account id cannot be empty.")
    User.username_validator(username)
    return username


def user_create(
    *,
    username: str,
    password: str | None = None,
    must_change_password: bool = True,
    capability_profile: CapabilityProfile | None = None,
    **fields,
) -> tuple[User, str]:
    """Creates a lab account with a free forward port. Returns it with its initial password
    (generated when none is given) so a maintainer can hand it over once."""
    username = normalise_username(username)
    if User.objects.filter(username=username).exists():
        raise ValidationError(f"The account {username} already exists.")
    password = password or generate_password()
    user = User(
        username=username,
        must_change_password=must_change_password,
        capability_profile=capability_profile,
        **fields,
    )
    user.set_password(password)
    user.save()
    return user, password


@transaction.atomic
def users_create_bulk(
    *, usernames: list[str], capability_profile: CapabilityProfile | None = None
) -> list[tuple[User, str]]:
    """Creates every new id with a generated must-change password; existing ids are skipped.
    All or nothing: one bad id creates no account."""
    wanted = list(dict.fromkeys(normalise_username(name) for name in usernames if name.strip()))
    existing = set(User.objects.filter(username__in=wanted).values_list("username", flat=True))
    return [
        user_create(username=name, capability_profile=capability_profile)
        for name in wanted
        if name not in existing
    ]


def user_set_password(*, user: User, password: str, must_change: bool = False) -> User:
    user.set_password(password)
    user.must_change_password = must_change
    user.save(update_fields=["password", "must_change_password"])
    return user


def user_reset_password(*, user: User) -> str:
    """A fresh generated password the user must change at next login."""
    password = generate_password()
    user_set_password(user=user, password=password, must_change=True)
    return password


def users_assign_profile(*, users: Iterable[User], profile: CapabilityProfile | None) -> int:
    """Gives these accounts `profile` (None: the default profile). Returns how many changed."""
    ids = [user.pk for user in users]
    return (
        User.objects.filter(pk__in=ids).exclude(capability_profile=profile).update(capability_profile=profile)
    )
