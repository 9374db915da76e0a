"""Job forms check shape only; the rules live in jobs.services."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from accounts.selectors import request_defaults
from bookings.selectors import hosts_open_to
from containers.models import Host, Image


class JobForm(forms.Form):
    image = forms.ModelChoiceField(queryset=Image.objects.none(), empty_label=None, label=_("Image"))
    command = forms.CharField(
        max_length=4000,
        label=_("Command"),
        widget=forms.TextInput(attrs={"placeholder": "python train.py --epochs 10"}),
        help_text=_(
            "Run as an argument list, never by a shell. Outputs go to /root/Work/jobs/<job id>/ "
            "(the folder is in $JOB_OUTPUT)."
        ),
    )
    host = forms.ModelChoiceField(
        queryset=Host.objects.order_by("name"),
        required=False,
        empty_label=_("Any host"),
        label=_("Host"),
    )
    cpus = forms.DecimalField(label=_("CPUs"), max_digits=6, decimal_places=2, initial=1)
    memory_gb = forms.IntegerField(label=_("Memory (GB)"), initial=4)
    gpu_count = forms.IntegerField(label=_("GPUs"), initial=1)
    time_limit_minutes = forms.IntegerField(
        label=_("Time limit (minutes)"),
        initial=60,
        help_text=_("The job is stopped when it runs this long."),
    )
    dependency = forms.CharField(
        max_length=1000,
        required=False,
        label=_("Start after"),
        help_text=_("Your jobs it waits for, as Slurm writes it: afterok:12, afterany:12:13, afternotok:14."),
    )

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["host"].queryset = hosts_open_to(user=user)
        images = Image.objects.filter(is_active=True).order_by("reference")
        self.fields["image"].queryset = images
        default = images.filter(pk=user.default_image_id).first() or images.filter(is_default=True).first()
        self.fields["image"].initial = default.pk if default else None
        if not self.is_bound:
            # "Any host" is the default: suggest what fits on at least one host.
            hosts = list(self.fields["host"].queryset)
            for name, value in request_defaults(user=user, hosts=hosts).items():
                self.fields[name].initial = value

    def add_service_error(self, error: ValidationError) -> None:
        add_service_error(self, error)


class JobUploadForm(forms.Form):
    """A DoPQ zip: its container_config.json gives the memory, GPUs and command; the size
    and content rules are the service's (jobs.uploads)."""

    upload = forms.FileField(
        label=_("DoPQ zip"),
        help_text=_(
            "A zip with a Dockerfile and container_config.json, at its root or in one folder. "
            "The image is built on the chosen host, for your jobs only."
        ),
    )
    host = forms.ModelChoiceField(queryset=Host.objects.order_by("name"), label=_("Host"))
    cpus = forms.DecimalField(label=_("CPUs"), max_digits=6, decimal_places=2, initial=1)
    time_limit_minutes = forms.IntegerField(label=_("Time limit (minutes)"), initial=60)

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["host"].queryset = hosts_open_to(user=user)

    def clean_upload(self):
        upload = self.cleaned_data["upload"]
        if upload.size > settings.JOB_UPLOAD_MAX_BYTES:
            # Refused before it is read into memory.
            raise ValidationError(
                _("The zip is larger than %(most)s MB.") % {"most": settings.JOB_UPLOAD_MAX_BYTES // 2**20}
            )
        return upload

    def add_service_error(self, error: ValidationError) -> None:
        add_service_error(self, error)


def add_service_error(form: forms.Form, error: ValidationError) -> None:
    """A service's ValidationError on the form: on the field it names, else on the form."""
    if hasattr(error, "error_dict"):
        for name, messages in error.message_dict.items():
            for message in messages:
                form.add_error(name if name in form.fields else None, message)
    else:
        for message in error.messages:
            form.add_error(None, message)
