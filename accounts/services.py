import secrets
from collections.abc import Collection, Iterable, Mapping

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import translation
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.translation import gettext as _

from accounts.models import PORT_ATTEMPTS, CapabilityProfile, User
from accounts.selectors import first_free_forward_port
from accounts.sshkeys import clean_ssh_public_keys
from accounts.validators import validate_account_id
from aivc_portal.model_updates import Saved, model_create, model_update
from containers.commands import command_arguments
from containers.models import Image

# Letters and digits without look-alikes (0/O, 1/l/I) so a printed password reads back.
_GENERATED_CHARACTERS = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def generate_password(length: int = 12) -> str:
    return "".join(secrets.choice(_GENERATED_CHARACTERS) for _ in range(length))


def normalise_username(username: str) -> str:
    username = (username or "").strip().lower()
    if not username:
        raise ValidationError("An account id cannot be empty.")
    validate_account_id(username)
    return username


def user_create(
    *,
    username: str,
    password: str | None = None,
    must_change_password: bool = True,
    capability_profile: CapabilityProfile | None = None,
    usable_password: bool = True,
    **fields,
) -> tuple[User, str]:
    """Creates a lab account with a free forward port. Returns it with its initial password
    (generated when none is given) so a maintainer can hand it over once. Without
    `usable_password` nobody can log in with a password (e.g. an account imported only for
    its history) and the password returned is empty."""
    username = normalise_username(username)
    if User.objects.filter(username=username).exists():
        raise ValidationError(f"The account {username} already exists.")
    user = User(
        username=username,
        must_change_password=must_change_password,
        capability_profile=capability_profile,
        **fields,
    )
    if usable_password:
        password = password or generate_password()
        user.set_password(password)
    else:
        password = ""
        user.set_unusable_password()
    user.save()
    return user, password


# What a maintainer (the admin, the importer) sets on an existing account in one write.
USER_LAB_FIELDS = frozenset({"is_active", "capability_profile", "default_image", "default_extra_command"})


def user_update_lab_settings(*, user: User, **values) -> list[str]:
    """Sets an account's activity, profile, default image and default command as a
    maintainer does: any image (an inactive one stays the default of an old account and
    is refused at booking), a command the launch can split. Returns the changed fields.
    The forward port moves only through `user_change_forward_port`."""
    unknown = sorted(set(values) - USER_LAB_FIELDS)
    if unknown:
        raise TypeError(f"user_update_lab_settings does not take {', '.join(unknown)}")
    if "default_extra_command" in values:
        values["default_extra_command"] = (values["default_extra_command"] or "").strip()
        try:
            command_arguments(values["default_extra_command"])
        except ValueError as error:
            raise ValidationError(
                {"default_extra_command": f"Wrong Input! It cannot be read as arguments ({error})."}
            ) from None
    return model_update(instance=user, values=values)


# Capability profiles ---------------------------------------------------------------------

PROFILE_LIMITS = frozenset(CapabilityProfile.LIMIT_FIELDS + CapabilityProfile.USAGE_LIMIT_FIELDS)


@transaction.atomic
def default_profile_update(**limits) -> Saved:
    """The default profile (exactly one exists) with these limits; created as "default"
    when there is none yet. On the default profile a null limit means the host maximum."""
    _check_profile_limits(limits)
    default = CapabilityProfile.objects.select_for_update().filter(is_default=True).first()
    if default is None:
        values = {"name": "default", "is_default": True, **limits}
        return Saved(model_create(model=CapabilityProfile, values=values), created=True)
    return Saved(default, changed=model_update(instance=default, values=limits))


def profile_create_or_update(*, name: str, **limits) -> Saved:
    """The non-default profile `name` with these limits (null: the default's value). The
    default profile is changed only by `default_profile_update`."""
    _check_profile_limits(limits)
    profile = CapabilityProfile.objects.filter(name=name).first()
    if profile is None:
        return Saved(model_create(model=CapabilityProfile, values={"name": name, **limits}), created=True)
    if profile.is_default:
        raise ValidationError({"name": f"{name} is the default profile; change it as the default."})
    return Saved(profile, changed=model_update(instance=profile, values=limits))


def _check_profile_limits(limits: dict) -> None:
    unknown = sorted(set(limits) - PROFILE_LIMITS)
    if unknown:
        raise TypeError(f"a capability profile has no limit {', '.join(unknown)}")


@transaction.atomic
def users_create_bulk(
    *,
    usernames: list[str],
    capability_profile: CapabilityProfile | None = None,
    emails: Mapping[str, str] | None = None,
) -> list[tuple[User, str]]:
    """Creates every new id with a generated must-change password; existing ids are skipped.
    An id given an address in `emails` gets it and no password at all (its owner sets one
    through the link `user_send_set_password_link` mails): its password returned is empty.
    All or nothing: one bad id creates no account."""
    emails = {normalise_username(name): address for name, address in (emails or {}).items()}
    wanted = list(dict.fromkeys(normalise_username(name) for name in usernames if name.strip()))
    existing = set(User.objects.filter(username__in=wanted).values_list("username", flat=True))
    created = []
    for name in wanted:
        if name in existing:
            continue
        address = emails.get(name, "")
        created.append(
            user_create(
                username=name,
                capability_profile=capability_profile,
                email=address,
                usable_password=not address,
                must_change_password=not address,
            )
        )
    return created


def user_send_set_password_link(*, user: User) -> None:
    """E-mails the account a one-time link to set its password, in its language: Django's
    password-reset token, void once a password is set or after PASSWORD_RESET_TIMEOUT.
    Raises whatever the mail server raises; the account is unchanged then."""
    if not user.email:
        raise ValidationError(f"The account {user.username} has no e-mail address.")
    link = settings.PORTAL_URL + reverse(
        "password_set",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )
    days = max(1, settings.PASSWORD_RESET_TIMEOUT // 86400)
    with translation.override(user.preferred_language):
        subject = _("[%(site)s] Your account %(username)s: set your password") % {
            "site": settings.SITE_NAME,
            "username": user.username,
        }
        body = _(
            "An account %(username)s was made for you on %(site)s.\n\n"
            "Set its password here (the link works once, for %(days)s days):\n%(link)s\n\n"
            "Then log in at %(portal)s with the account id and that password."
        ) % {
            "username": user.username,
            "site": settings.SITE_NAME,
            "days": days,
            "link": link,
            "portal": settings.PORTAL_URL + "/",
        }
    EmailMessage(subject=subject, body=body, to=[user.email]).send(fail_silently=False)


def user_set_password(*, user: User, password: str, must_change: bool = False) -> User:
    user.set_password(password)
    user.must_change_password = must_change
    user.save(update_fields=["password", "must_change_password"])
    return user


def user_change_password(*, user: User, new_password: str) -> User:
    """The user's own change (forced after a reset or import, or chosen): the new password
    must differ from the current one, so the one-time password a maintainer handed over
    cannot simply be kept."""
    if user.check_password(new_password):
        raise ValidationError(
            _("Choose a new password: it must differ from the current (one-time) password."),
            code="password_unchanged",
        )
    return user_set_password(user=user, password=new_password)


def user_reset_password(*, user: User) -> str:
    """A fresh generated password the user must change at next login."""
    password = generate_password()
    user_set_password(user=user, password=password, must_change=True)
    return password


def user_unlock_login(*, user: User) -> int:
    """Clears the failed logins counted against this account (not those against an
    address), so a locked-out user can log in again now. Returns how many were cleared."""
    from axes.utils import reset  # imported here: axes reads its settings when first used

    return reset(username=user.username)


def users_assign_profile(*, users: Iterable[User], profile: CapabilityProfile | None) -> int:
    """Gives these accounts `profile` (None: the default profile). Returns how many changed."""
    ids = [user.pk for user in users]
    return (
        User.objects.filter(pk__in=ids).exclude(capability_profile=profile).update(capability_profile=profile)
    )


def user_update_profile(
    *,
    user: User,
    ssh_public_keys: str,
    default_image: Image | None,
    default_extra_command: str,
    language: str | None = None,
) -> User:
    """Saves the settings a user keeps for every booking: keys, default image and command,
    and the language (None: unchanged)."""
    errors: dict[str, list[str]] = {}
    if language is not None and language and language not in dict(settings.LANGUAGES):
        errors["language"] = [_("Choose one of the portal's languages.")]
    try:
        ssh_public_keys = clean_ssh_public_keys(ssh_public_keys)
    except ValidationError as error:
        errors["ssh_public_keys"] = error.messages
    if default_image is not None and not default_image.is_active:
        errors["default_image"] = ["Not the available image!"]
    default_extra_command = (default_extra_command or "").strip()
    try:
        command_arguments(default_extra_command)
    except ValueError as error:
        errors["default_extra_command"] = [f"Wrong Input! It cannot be read as arguments ({error})."]
    if errors:
        raise ValidationError(errors)
    user.ssh_public_keys = ssh_public_keys
    user.default_image = default_image
    user.default_extra_command = default_extra_command
    fields = ["ssh_public_keys", "default_image", "default_extra_command"]
    if language is not None:
        user.language = language
        fields.append("language")
    user.save(update_fields=fields)
    return user


FORWARD_PORT_DUPLICATED = "Another account already uses this port; choose a free one."


def check_forward_port(*, user: User, port: int, ports_held: Collection[int] = ()) -> None:
    """A container's SSH port comes from PORT_RANGE and is nobody else's: no other
    account's, and not in `ports_held`, the ports other users' live reservations still use
    (the caller knows bookings; this layer does not)."""
    port_range = settings.PORT_RANGE
    if port not in port_range:
        first, last = port_range.start, port_range.stop - 1
        raise ValidationError(
            {"forward_port": f"Wrong Input! The port must be within {first}-{last}."},
            code="port_out_of_range",
        )
    if port == user.forward_port:
        return
    taken = User.objects.filter(forward_port=port).exclude(pk=user.pk).exists()
    if taken or port in ports_held:
        raise ValidationError({"forward_port": FORWARD_PORT_DUPLICATED}, code="port_taken")


def forward_port_ensure(*, user: User) -> User:
    """The user's forward port, assigned from the free ports the first time a booking needs
    one (staff and superusers get none at creation: User.may_book_by_default)."""
    if user.forward_port is not None:
        return user
    for attempt in range(PORT_ATTEMPTS):
        port = first_free_forward_port(any_free=attempt > 0)
        try:
            with transaction.atomic():
                User.objects.filter(pk=user.pk, forward_port__isnull=True).update(forward_port=port)
        except IntegrityError:
            continue  # another account took it meanwhile
        user.refresh_from_db(fields=["forward_port"])
        return user
    raise ValidationError(FORWARD_PORT_DUPLICATED, code="port_taken")


def user_change_forward_port(*, user: User, port: int, ports_held: Collection[int] = ()) -> User:
    """Moves the user's SSH forward port (check_forward_port), so a container never
    collides with another on the same port."""
    check_forward_port(user=user, port=port, ports_held=ports_held)
    if port == user.forward_port:
        return user
    user.forward_port = port
    try:
        with transaction.atomic():
            user.save(update_fields=["forward_port"])
    except IntegrityError:
        # Another account took the port between the check and the save.
        raise ValidationError({"forward_port": FORWARD_PORT_DUPLICATED}, code="port_taken") from None
    return user


def user_set_language(*, user: User, language: str) -> None:
    """Stores the language a user chose (the header's switch); an unknown code is ignored,
    as Django's own switch ignores it."""
    if language in dict(settings.LANGUAGES) and user.language != language:
        user.language = language
        user.save(update_fields=["language"])
