"""Booking forms check shape only; the rules live in bookings.services."""

from datetime import date, datetime, time, timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import ModelChoiceIterator
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from accounts.selectors import request_defaults
from bookings.selectors import host_open_to, hosts_open_to
from bookings.services import (
    KEYLESS_IMAGE,
    NOT_AVAILABLE_IMAGE,
    NOT_ENOUGH_CAPACITY,
    OVER_MAXIMUM,
    OWN_OVERLAP,
)
from bookings.timeslots import NOW_FLAG
from containers.models import Host, Image
from containers.selectors import bookable_images


class IsoDateInput(forms.DateInput):
    """`<input type=date>` shows and sends only ISO dates; a localized value (zh-Hant
    renders 2026/11/23) would leave it empty and fail the default submission."""

    input_type = "date"

    def __init__(self, attrs: dict | None = None) -> None:
        super().__init__(attrs=attrs, format="%Y-%m-%d")


class FixedChoiceField(forms.ChoiceField):
    """A choice field over a module's constant list: every form instance shares the list
    instead of deep-copying it (with its lazy labels, the largest cost of building a
    booking form)."""

    def __deepcopy__(self, memo: dict) -> "FixedChoiceField":
        # Field's copy (widget, messages, validators) without ChoiceField's copy of the list.
        return forms.Field.__deepcopy__(self, memo)


class _ListedOnce(ModelChoiceIterator):
    """The field's choices from its list read once per form (`ListedOnceField.listed`):
    rendering a select iterates its choices twice (the options, and the check of the first
    for the required attribute), each a fresh query otherwise."""

    def __init__(self, field: "ListedOnceField") -> None:
        self.field = field

    @property
    def queryset(self):
        return self.field.queryset

    def __iter__(self):
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for obj in self.field.listed():
            yield self.choice(obj)

    def __len__(self) -> int:
        return len(self.field.listed()) + (self.field.empty_label is not None)

    def __bool__(self) -> bool:
        return self.field.empty_label is not None or bool(self.field.listed())


class ListedOnceField(forms.ModelChoiceField):
    iterator = _ListedOnce
    _listed_from = None
    _listed: list = []

    def listed(self) -> list:
        """The queryset's rows, read on first use and again only if the queryset changes."""
        if self._listed_from is not self.queryset:
            self._listed_from = self.queryset
            self._listed = list(self.queryset)
        return self._listed


class HostChoiceField(ListedOnceField):
    """Lists the hosts open to `user` (`hosts_open_to`), built only when the choices are
    shown: a posted host is checked with the one-host form of the same rule
    (`host_open_to`), which for an unrestricted host is one light read instead of the
    list's subqueries (building that queryset alone was a fifth of a booking POST's view)."""

    user: User | None = None
    _listed_for: User | None = None

    def _get_queryset(self):
        if self.user is not None and self._listed_for is not self.user:
            self._listed_for = self.user
            # With their agents: the choice labels tell a host whose agent is silent.
            self._queryset = hosts_open_to(user=self.user).select_related("agent")
        return self._queryset

    queryset = property(_get_queryset, forms.ModelChoiceField._set_queryset)

    def to_python(self, value: object) -> Host | None:
        if value in self.empty_values:
            return None
        self.validate_no_null_characters(value)
        try:
            host = Host.objects.select_related("access").get(pk=value)
        except (ValueError, TypeError, Host.DoesNotExist, ValidationError):
            host = None
        if host is None or self.user is None or not host_open_to(user=self.user, host=host):
            raise ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice", params={"value": value}
            )
        return host


SLOT_TIMES = [(f"{minutes // 60:02d}:{minutes % 60:02d}",) * 2 for minutes in range(0, 24 * 60, 30)]


def _days(days: int) -> str:
    return ngettext("%(count)d day", "%(count)d days", days) % {"count": days}


days_label = lazy(_days, str)
# The old tool's relative ends: N-day (1-14) and N-week (1-2).
DURATIONS = [(f"{days}-day", days_label(days)) for days in range(1, 7)]
DURATIONS += [("1-week", _("1 week"))]
DURATIONS += [(f"{days}-day", days_label(days)) for days in range(8, 14)]
DURATIONS += [("2-week", _("2 weeks"))]
EXTENSIONS = [
    ("30", _("30 minutes")),
    ("60", _("1 hour")),
    ("120", _("2 hours")),
    ("240", _("4 hours")),
    ("720", _("12 hours")),
    ("1440", _("1 day")),
    ("2880", _("2 days")),
    ("4320", _("3 days")),
    ("10080", _("1 week")),
]
END_AFTER = "duration"
END_AT = "at"

# Messages of the booking service that are shown translated; a message may add detail
# after one of them, e.g. "Over the maximum required. (cpus: 1 ~ 8)".
SERVICE_MESSAGES = (NOT_ENOUGH_CAPACITY, OVER_MAXIMUM, NOT_AVAILABLE_IMAGE, KEYLESS_IMAGE, OWN_OVERLAP)


def translate_service_message(message: str) -> str:
    for english in SERVICE_MESSAGES:
        if message.startswith(english):
            return gettext(english) + message[len(english) :]
    return message


# Service errors name service arguments; these are the form fields that show them.
SERVICE_FIELD_TO_FORM_FIELD = {"start": "start_date", "end": "end_date", "image": "image"}


def _local_datetime(day: date | None, slot: str | None) -> datetime | None:
    if day is None or not slot:
        return None
    hour, minute = (int(part) for part in slot.split(":"))
    return timezone.make_aware(datetime.combine(day, time(hour, minute)))


class BookingForm(forms.Form):
    host = HostChoiceField(queryset=Host.objects.order_by("name"), empty_label=None, label=_("Host"))
    start_now = forms.BooleanField(required=False, label=_("Start now"))
    start_date = forms.DateField(required=False, label=_("Start date"), widget=IsoDateInput())
    start_time = FixedChoiceField(choices=SLOT_TIMES, required=False, label=_("Start time"))
    end_kind = forms.ChoiceField(
        choices=[(END_AFTER, _("For a duration")), (END_AT, _("Until a date and time"))],
        initial=END_AFTER,
        widget=forms.RadioSelect,
        label=_("End"),
    )
    duration = FixedChoiceField(choices=DURATIONS, required=False, initial="1-day", label=_("Duration"))
    end_date = forms.DateField(required=False, label=_("End date"), widget=IsoDateInput())
    end_time = FixedChoiceField(choices=SLOT_TIMES, required=False, label=_("End time"))
    cpus = forms.DecimalField(label=_("CPUs"), max_digits=6, decimal_places=2, initial=1)
    memory_gb = forms.IntegerField(label=_("Memory (GiB)"), initial=4, help_text=_("RAM + swap."))
    gpu_count = forms.IntegerField(label=_("GPUs"), initial=1)
    image = ListedOnceField(queryset=Image.objects.none(), empty_label=None, label=_("Image"))
    extra_command = forms.CharField(
        required=False,
        max_length=1000,
        label=_("Extra command"),
        help_text=_("Run when the container starts, as arguments to the image; leave empty for none."),
    )

    service_fields = SERVICE_FIELD_TO_FORM_FIELD

    def __init__(self, *args, user: User, host_labels: dict[int, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only the hosts the user may book; each named with what it has free now.
        self.fields["host"].user = user
        if host_labels:
            self.label_hosts(host_labels)
        images = bookable_images()
        self.fields["image"].queryset = images
        if not self.is_bound:
            # Initial values only show on an empty form; a posted one skips these reads.
            listed = self.fields["image"].listed()
            own = [image for image in listed if image.pk == user.default_image_id]
            default = (own or [image for image in listed if image.is_default] or [None])[0]
            self.fields["image"].initial = default.pk if default else None
            self.fields["extra_command"].initial = user.default_extra_command
            hosts = self.fields["host"].listed()
            chosen = [host for host in hosts if str(host.pk) == str(self.initial.get("host"))] or hosts[:1]
            for name, value in request_defaults(user=user, hosts=chosen).items():
                self.fields[name].initial = value
        for name in ("cpus", "memory_gb", "gpu_count"):
            self.fields[name].widget.attrs["inputmode"] = "decimal" if name == "cpus" else "numeric"

    def booking_fields(self) -> list[forms.BoundField]:
        """The fields of the booking itself, which the waitlist offer posts on unchanged."""
        return [self[name] for name in BookingForm.base_fields]

    def label_hosts(self, host_labels: dict[int, str]) -> None:
        """Names each host choice, e.g. with what it has free now. Only a form that is shown
        needs this: a booking that succeeds never renders the form, so its view skips the
        capacity read behind the labels."""
        self.fields["host"].label_from_instance = lambda host: host_labels.get(host.pk, host.name)

    def clean(self) -> dict:
        data = super().clean()
        if data.get("start_now"):
            data["start"] = NOW_FLAG
        else:
            data["start"] = _local_datetime(data.get("start_date"), data.get("start_time"))
            if data["start"] is None and "start_date" not in self.errors:
                self.add_error("start_date", _("Wrong Input! Choose a start date and time, or start now."))
        if data.get("end_kind") == END_AT:
            data["end"] = _local_datetime(data.get("end_date"), data.get("end_time"))
            if data["end"] is None and "end_date" not in self.errors:
                self.add_error("end_date", _("Wrong Input! Choose an end date and time."))
        else:
            data["end"] = data.get("duration")
            if not data["end"]:
                self.add_error("duration", _("Wrong Input! Choose a duration."))
        return data

    def add_service_error(self, error: ValidationError) -> None:
        """Shows a service's ValidationError next to the field it names, or above the
        form when it names none."""
        if hasattr(error, "error_dict"):
            end_field = "duration" if self.cleaned_data.get("end_kind") == END_AFTER else "end_date"
            for name, messages in error.message_dict.items():
                field = end_field if name == "end" else self.service_fields.get(name, name)
                for message in messages:
                    self.add_error(
                        field if field in self.fields else None, translate_service_message(message)
                    )
        else:
            for message in error.messages:
                self.add_error(None, translate_service_message(message))


class ExtendForm(forms.Form):
    """A later end: by a step from the current end, or at a date and time."""

    extend_by = FixedChoiceField(choices=EXTENSIONS, required=False, label=_("Extend by"))
    end_date = forms.DateField(required=False, label=_("Or until date"), widget=IsoDateInput())
    end_time = forms.ChoiceField(choices=[("", "—"), *SLOT_TIMES], required=False, label=_("Until time"))

    def __init__(self, *args, current_end: datetime, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.current_end = current_end

    def clean(self) -> dict:
        data = super().clean()
        at = _local_datetime(data.get("end_date"), data.get("end_time"))
        if at is not None:
            data["end"] = at
        elif data.get("extend_by"):
            data["end"] = self.current_end + timedelta(minutes=int(data["extend_by"]))
        else:
            raise ValidationError(_("Wrong Input! Choose how long to extend."))
        return data


class WaitlistForm(BookingForm):
    """A refused booking's fields, and how it should wait: for this window, or for the first
    window of its length from its start, up to a latest start (empty: as late as a booking
    may start)."""

    mode = forms.ChoiceField(
        choices=[
            ("window", _("Wait for this window")),
            ("first_after", _("Wait for the first window after")),
        ],
        label=_("How to wait"),
    )
    latest_date = forms.DateField(required=False, label=_("Latest start date"), widget=IsoDateInput())
    latest_time = forms.ChoiceField(
        choices=[("", "—"), *SLOT_TIMES], required=False, label=_("Latest start time")
    )
    service_fields = {**SERVICE_FIELD_TO_FORM_FIELD, "latest_start": "latest_date"}

    def clean(self) -> dict:
        data = super().clean()
        data["latest_start"] = _local_datetime(data.get("latest_date"), data.get("latest_time"))
        if data.get("latest_date") and data["latest_start"] is None:
            self.add_error("latest_time", _("Wrong Input! Choose a latest start time."))
        return data
