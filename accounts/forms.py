from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from accounts.backends import DIRECTORY_DOWN_MESSAGE, directory_was_down
from accounts.models import ApiToken, CapabilityProfile, LimitKind, NotificationKind, User
from containers.models import Image


class LoginForm(AuthenticationForm):
    """Django's login form, which tells an unreachable directory apart from a wrong password."""

    def clean(self):
        try:
            return super().clean()
        except ValidationError as error:
            if error.code == "invalid_login" and directory_was_down(self.request):
                raise ValidationError(DIRECTORY_DOWN_MESSAGE, code="directory_unavailable") from None
            raise


class ProfileForm(forms.Form):
    ssh_public_keys = forms.CharField(
        required=False,
        label=_("SSH public keys"),
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false", "autocomplete": "off"}),
        help_text=_("One OpenSSH public key per line, e.g. the contents of ~/.ssh/id_ed25519.pub."),
    )
    default_image = forms.ModelChoiceField(
        queryset=Image.objects.filter(is_active=True).order_by("reference"),
        required=False,
        label=_("Default image"),
        empty_label=_("The lab's default"),
    )
    default_extra_command = forms.CharField(
        required=False,
        max_length=1000,
        label=_("Default extra command"),
        help_text=_("Prefilled in the booking form."),
    )
    language = forms.ChoiceField(
        required=False,
        label=_("Language"),
        choices=[("", _("As my browser says")), *settings.LANGUAGES],
        help_text=_("Pages, e-mails, notices and calendar entries are written in it."),
    )

    @classmethod
    def for_user(cls, user: User, data=None) -> "ProfileForm":
        initial = {
            "language": user.language,
            "ssh_public_keys": user.ssh_public_keys,
            "default_image": user.default_image_id,
            "default_extra_command": user.default_extra_command,
        }
        return cls(data, initial=initial, prefix="profile")


class ForwardPortForm(forms.Form):
    forward_port = forms.IntegerField(label=_("Forward port"))

    @classmethod
    def for_user(cls, user: User, data=None) -> "ForwardPortForm":
        return cls(data, initial={"forward_port": user.forward_port}, prefix="port")


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label=_("Token name"),
        help_text=_("Where it is used, e.g. “laptop” or “lab cluster”."),
    )
    expires_in_days = forms.TypedChoiceField(
        coerce=int,
        label=_("Expires"),
        choices=[(7, _("In 7 days")), (30, _("In 30 days")), (90, _("In 90 days")), (365, _("In a year"))],
        help_text=_("Every token expires; make a new one when it does."),
    )
    scope = forms.ChoiceField(
        label=_("It may"),
        choices=[
            (ApiToken.Scope.BOOK, _("read, book and run jobs")),
            (ApiToken.Scope.READ, _("only read")),
        ],
        help_text=_("No token can make tokens or change your SSH keys: that needs this page."),
    )

    @classmethod
    def for_user(cls, data=None) -> "ApiTokenForm":
        initial = {"expires_in_days": min(settings.API_TOKEN_DEFAULT_DAYS, 365), "scope": ApiToken.Scope.BOOK}
        form = cls(data, prefix="token", initial=initial)
        # Choices within the lab's longest expiry; the default is always offered.
        days = {settings.API_TOKEN_DEFAULT_DAYS, *(d for d, _l in form.fields["expires_in_days"].choices)}
        labels = dict(form.fields["expires_in_days"].choices)
        form.fields["expires_in_days"].choices = [
            (d, labels.get(d, _("In %(days)d days") % {"days": d}))
            for d in sorted(days)
            if d <= settings.API_TOKEN_MAX_DAYS
        ]
        return form


class EmailKindsForm(forms.Form):
    email_kinds = forms.MultipleChoiceField(
        required=False,
        choices=NotificationKind.choices,
        widget=forms.CheckboxSelectMultiple,
        label=_("Also send me an e-mail for"),
    )

    @classmethod
    def for_user(cls, kinds: list[str], data=None) -> "EmailKindsForm":
        return cls(data, initial={"email_kinds": kinds}, prefix="email")


class LimitRequestForm(forms.Form):
    """Asking for more: the kind, its values, until when and why. Shape only; the rules are
    in accounts.grant_services."""

    kind = forms.ChoiceField(choices=LimitKind.choices, label=_("What you need"))
    gpu_hours_per_week = forms.DecimalField(
        required=False,
        max_digits=8,
        decimal_places=1,
        label=_("GPU-hours per week"),
        help_text=_("For a budget."),
    )
    gpus_at_once = forms.IntegerField(
        required=False, label=_("GPUs at once"), help_text=_("For caps at once.")
    )
    cpus_at_once = forms.DecimalField(required=False, max_digits=6, decimal_places=2, label=_("CPUs at once"))
    memory_gb_at_once = forms.IntegerField(required=False, label=_("Memory at once (GiB)"))
    profile = forms.ModelChoiceField(
        queryset=CapabilityProfile.objects.order_by("name"),
        required=False,
        label=_("Profile"),
        help_text=_("For another capability profile."),
    )
    until = forms.DateField(
        label=_("Last day"), widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    reason = forms.CharField(
        max_length=2000,
        label=_("Why"),
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("E.g. your thesis deadline and the experiment it needs."),
    )
