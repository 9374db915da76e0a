"""Tokens die with the password they were made under and with the account: whatever changes
a password (the profile page, a maintainer's reset, admin's password form, the shell) or
deactivates an account goes through User.save, so the rule is kept here, once."""

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from accounts.models import User
from accounts.services import user_set_language
from accounts.token_services import api_tokens_revoke_all

_REVOKE_FLAG = "_aivc_revoke_tokens"


@receiver(pre_save, sender=User, dispatch_uid="aivc-tokens-note-password-or-deactivation")
def _note_password_change_or_deactivation(sender, instance: User, update_fields=None, **kwargs) -> None:
    if instance.pk is None:
        return
    if update_fields is not None and not {"password", "is_active"} & set(update_fields):
        return  # e.g. last_login at each login: no extra query
    before = User.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    deactivated = before["is_active"] and not instance.is_active
    setattr(instance, _REVOKE_FLAG, deactivated or before["password"] != instance.password)


@receiver(post_save, sender=User, dispatch_uid="aivc-tokens-revoke-after-password-or-deactivation")
def _revoke_tokens(sender, instance: User, created: bool, **kwargs) -> None:
    if getattr(instance, _REVOKE_FLAG, False):
        setattr(instance, _REVOKE_FLAG, False)
        api_tokens_revoke_all(user=instance)


@receiver(user_logged_in, dispatch_uid="aivc-language-from-the-switch-at-login")
def _keep_the_language_switched_before_login(sender, request, user: User, **kwargs) -> None:
    """A language picked with the switch before signing in (its cookie) becomes the stored
    one when none is stored yet; a stored choice is never overwritten by a cookie."""
    cookie = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME, "") if request is not None else ""
    if not getattr(user, "language", "x") and cookie:
        user_set_language(user=user, language=cookie)
