import logging

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.models import LogEntry
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import HttpRequest
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join

from accounts.grant_services import limit_grant_end_now, limit_request_approve, limit_request_deny
from accounts.models import ApiToken, CapabilityProfile, LimitGrant, LimitRequest, Notification, User
from accounts.selectors import capability_for, first_free_forward_port
from accounts.services import (
    normalise_username,
    user_reset_password,
    user_send_set_password_link,
    user_unlock_login,
    users_assign_profile,
    users_create_bulk,
)
from accounts.sshkeys import clean_ssh_public_keys
from accounts.token_services import api_token_revoke
from aivc_portal.admin_actions import action_form_page, apply_to_each, log_each
from bookings.limits import usage_for
from containers.models import Host

logger = logging.getLogger(__name__)


@admin.register(CapabilityProfile)
class CapabilityProfileAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "is_default",
        "cpus",
        "memory_gb",
        "gpus",
        "work_space_gb",
        "backup_space_gb",
        "home_space_gb",
        "gpus_at_once",
        "gpu_hours_per_week",
    )
    list_filter = ("is_default",)
    search_fields = ("name",)


class BulkCreateForm(forms.Form):
    usernames = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10}),
        help_text="Account ids, separated by spaces, commas or new lines. An e-mail address after "
        "an id (m11007s05 m11007s05@lab.example) mails its owner a one-time link to set a password; "
        "an id without one gets a password shown here once.",
    )
    capability_profile = forms.ModelChoiceField(
        CapabilityProfile.objects.all(), required=False, help_text="Empty: the default profile."
    )

    def clean_usernames(self) -> list[str]:
        names: list[str] = []
        self.emails: dict[str, str] = {}
        for word in self.cleaned_data["usernames"].replace(",", " ").split():
            if "@" not in word:
                names.append(word)
                continue
            if not names or names[-1] in self.emails:
                raise ValidationError(f"{word} follows no account id; put it after the id it belongs to.")
            validate_email(word)
            self.emails[names[-1]] = word
        return names


class UserCreationWithPortForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User

    def clean_username(self) -> str:
        return normalise_username(self.cleaned_data["username"])

    def clean(self) -> dict:
        cleaned = super().clean()
        # A full port range is reported on the form instead of failing in save().
        first_free_forward_port()
        return cleaned


class LabUserChangeForm(UserChangeForm):
    """The admin's account form checks ids and SSH keys as the portal's own pages do."""

    class Meta(UserChangeForm.Meta):
        model = User

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        # An id imported before the rule existed stays editable as long as it is unchanged.
        return normalise_username(username) if "username" in self.changed_data else username

    def clean_ssh_public_keys(self) -> str:
        return clean_ssh_public_keys(self.cleaned_data["ssh_public_keys"])


class AssignProfileForm(forms.Form):
    capability_profile = forms.ModelChoiceField(
        CapabilityProfile.objects.all(), required=False, label="Profile", empty_label="The default profile"
    )


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    add_form = UserCreationWithPortForm
    form = LabUserChangeForm
    list_display = ("username", "email", "forward_port", "capability_profile", "is_staff", "is_active")
    list_filter = ("is_staff", "is_active", "capability_profile", "must_change_password")
    list_select_related = ("capability_profile",)
    search_fields = ("username", "email", "first_name", "last_name")
    readonly_fields = ("effective_limits", "usage_this_week")
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        (
            "Lab",
            {
                "fields": (
                    "forward_port",
                    "capability_profile",
                    "effective_limits",
                    "usage_this_week",
                    "default_image",
                    "default_extra_command",
                    "ssh_public_keys",
                    "must_change_password",
                )
            },
        ),
    )
    change_list_template = "admin/accounts/user/change_list.html"
    actions = ["reset_password", "assign_profile", "unlock_login"]

    @admin.action(description="Unlock login (clear failed login attempts)", permissions=["change"])
    def unlock_login(self, request, queryset) -> None:
        cleared = sum(user_unlock_login(user=user) for user in queryset)
        log_each(self, request, queryset, "Unlocked login (failed attempts cleared).")
        self.message_user(
            request, f"Unlocked {queryset.count()} account(s); {cleared} failed attempt record(s) cleared."
        )

    @admin.action(description="Reset password (one-time, must change at login)", permissions=["change"])
    def reset_password(self, request, queryset) -> None:
        for user in queryset:
            password = user_reset_password(user=user)
            self.log_change(request, user, "Reset the password (one-time, must change at login).")
            # Shown once to the maintainer, never logged; the user must change it at login.
            self.message_user(
                request,
                f"{user.username}: one-time password {password} (shown only now; must be changed at login).",
                messages.WARNING,
            )

    @admin.action(description="Assign a capability profile…", permissions=["change"])
    def assign_profile(self, request, queryset):
        form = AssignProfileForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            profile = form.cleaned_data["capability_profile"]
            changed = users_assign_profile(users=queryset, profile=profile)
            log_each(self, request, queryset, f"Assigned the profile {profile or 'default'}.")
            self.message_user(
                request, f"{changed} account(s) now use {profile or 'the default profile'}.", messages.SUCCESS
            )
            return None
        return action_form_page(
            self,
            request,
            action="assign_profile",
            title="Assign a capability profile",
            items=[(user, str(user.capability_profile or "default profile")) for user in queryset],
            submit_label="Assign",
            form=form,
        )

    @admin.display(description="Effective limits per host")
    def effective_limits(self, user: User) -> str:
        if not user.pk:
            return "-"
        rows = []
        for host in Host.objects.all():
            limit = capability_for(user=user, host=host)
            rows.append(
                (
                    host.name,
                    f"cpus={limit.cpus:g} memory={limit.memory_gb} GB gpus={limit.gpus} "
                    f"work={limit.work_space_gb} GB backup={limit.backup_space_gb} GB "
                    f"home={limit.home_space_gb} GB",
                )
            )
        return format_html_join("", "<div><b>{}</b>: {}</div>", rows) or "No hosts yet."

    @admin.display(description="Usage this week")
    def usage_this_week(self, user: User) -> str:
        if not user.pk:
            return "-"
        usage = usage_for(user=user, now=timezone.now())
        limits = usage.limits

        def cap(value) -> str:
            return "none" if value is None else f"{value:g}"

        return (
            f"GPU-hours, last 7 days: {usage.gpu_hours_week:g} / budget {cap(usage.gpu_hours_budget)}; "
            f"next 7 days: {usage.gpu_hours_ahead:g}. Held now: {usage.gpus_now} GPUs "
            f"(cap {cap(limits.gpus_at_once)}), {usage.cpus_now:g} CPUs (cap {cap(limits.cpus_at_once)}), "
            f"{usage.memory_gb_now} GiB (cap {cap(limits.memory_gb_at_once)})."
        )

    def get_urls(self):
        extra = [
            path(
                "bulk-create/",
                self.admin_site.admin_view(self.bulk_create_view),
                name="accounts_user_bulk_create",
            )
        ]
        return extra + super().get_urls()

    def bulk_create_view(self, request):
        if not self.has_add_permission(request):
            return redirect("admin:index")
        form = BulkCreateForm(request.POST or None)
        created = None
        if request.method == "POST" and form.is_valid():
            try:
                created = users_create_bulk(
                    usernames=form.cleaned_data["usernames"],
                    capability_profile=form.cleaned_data["capability_profile"],
                    emails=form.emails,
                )
            except ValidationError as error:
                form.add_error("usernames", error)
            else:
                for user, _password in created:
                    self.log_addition(request, user, "Created in bulk.")
                messages.success(request, f"Created {len(created)} account(s).")
                created = [(user, password, self._mail_link(request, user)) for user, password in created]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "created": created,
            "title": "Create accounts in bulk",
            "changelist_url": reverse("admin:accounts_user_changelist"),
        }
        return render(request, "admin/accounts/user/bulk_create.html", context)

    @staticmethod
    def _mail_link(request: HttpRequest, user: User) -> str:
        """Mails an account with an address its set-password link; what to show beside it."""
        if not user.email:
            return ""
        try:
            user_send_set_password_link(user=user)
        except Exception as error:  # the mail server's refusal, whatever its kind
            logger.warning("Could not mail the set-password link of %s: %s", user.username, error)
            messages.warning(
                request,
                f"No mail reached {user.email} ({error}); use 'Reset password' on {user.username} "
                "to hand over a password instead.",
            )
            return "failed"
        return "sent"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Maintainers see every token (never its secret, which is not stored) and revoke any."""

    list_display = (
        "name",
        "user",
        "prefix",
        "scope",
        "created_at",
        "last_used_at",
        "last_used_from",
        "expires_at",
        "revoked_at",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "scope", "created_at")
    search_fields = ("name", "user__username", "prefix")
    list_select_related = ("user",)
    readonly_fields = (
        "user",
        "name",
        "prefix",
        "scope",
        "created_at",
        "last_used_at",
        "last_used_from",
        "expires_at",
        "revoked_at",
    )
    exclude = ("key_hash",)
    actions = ("revoke",)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            api_token_revoke(token=token)
            self.log_change(request, token, "Revoked.")
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "kind", "title", "email", "read_at")
    list_filter = ("kind", "email", ("read_at", admin.EmptyFieldListFilter))
    search_fields = ("user__username", "title", "key")
    list_select_related = ("user",)
    readonly_fields = ("user", "kind", "key", "title", "body", "link", "created_at", "emailed_at")
    actions = ("mark_read",)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Mark the selected notifications read", permissions=["change"])
    def mark_read(self, request, queryset) -> None:
        unread = list(queryset.filter(read_at__isnull=True))
        count = queryset.filter(pk__in=[note.pk for note in unread]).update(read_at=timezone.now())
        log_each(self, request, unread, "Marked read.")
        self.message_user(request, f"Marked {count} notification(s) read.", messages.SUCCESS)


@admin.register(LogEntry)
class LogEntryAdmin(admin.ModelAdmin):
    """The admin history across every object: who did what, when (docs/monitoring.md). Read
    only; superusers, or staff given "Can view log entry", see it."""

    list_display = ("action_time", "user", "content_type", "object_repr", "action_flag", "change_message")
    list_filter = ("action_flag", "content_type", ("user", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("user", "content_type")
    search_fields = ("object_repr", "change_message", "user__username")
    date_hierarchy = "action_time"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AnswerActionForm(ActionForm):
    """The action bar of requests for more carries the note the student reads."""

    note = forms.CharField(
        required=False, label="Note to the student", widget=forms.TextInput(attrs={"size": 60})
    )


@admin.register(LimitRequest)
class LimitRequestAdmin(admin.ModelAdmin):
    """Maintainers answer requests for more in one step: tick them, type a note, choose
    approve or deny; or open one, write the note, press Approve or Deny. Answered requests
    stay here, read-only, as the history."""

    list_display = ("created_at", "user", "kind", "summary", "ends_at", "status", "decided_by", "decided_at")
    list_filter = ("status", "kind", "created_at")
    search_fields = ("user__username", "reason", "note")
    list_select_related = ("user", "profile", "decided_by")
    action_form = AnswerActionForm
    actions = ("approve", "deny")
    change_form_template = "admin/accounts/limitrequest/change_form.html"
    fields = (
        "user",
        "kind",
        "gpu_hours_per_week",
        "gpus_at_once",
        "cpus_at_once",
        "memory_gb_at_once",
        "profile",
        "ends_at",
        "reason",
        "created_at",
        "status",
        "decided_by",
        "decided_at",
        "note",
    )

    def has_add_permission(self, request) -> bool:
        return False  # students ask on their requests page

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status == LimitRequest.Status.PENDING:
            return [field for field in self.fields if field != "note"]
        return self.fields

    @admin.display(description="Asked for")
    def summary(self, obj: LimitRequest) -> str:
        return obj.summary()

    def _answer(self, request, queryset, *, service, done: str) -> None:
        note = request.POST.get("note", "")
        answered = 0
        for limit_request in queryset:
            try:
                service(request=limit_request, by=request.user, note=note, now=timezone.now())
            except ValidationError as error:
                self.message_user(request, f"{limit_request}: {' '.join(error.messages)}", messages.ERROR)
            else:
                answered += 1
                self.log_change(request, limit_request, f"{done} with note: {note}" if note else done)
        if answered:
            self.message_user(request, f"{done}: {answered}; the students are told.", messages.SUCCESS)

    @admin.action(description="Approve the selected requests (with the note)", permissions=["change"])
    def approve(self, request, queryset) -> None:
        self._answer(request, queryset, service=limit_request_approve, done="Approved")

    @admin.action(description="Deny the selected requests (with the note)", permissions=["change"])
    def deny(self, request, queryset) -> None:
        self._answer(request, queryset, service=limit_request_deny, done="Denied")

    def response_change(self, request, obj: LimitRequest):
        """The change form's Approve and Deny buttons: the note just saved goes with it."""
        for button, service, done in (
            ("_approve", limit_request_approve, "Approved"),
            ("_deny", limit_request_deny, "Denied"),
        ):
            if button in request.POST and self.has_change_permission(request, obj):
                try:
                    service(request=obj, by=request.user, note=obj.note, now=timezone.now())
                except ValidationError as error:
                    self.message_user(request, " ".join(error.messages), messages.ERROR)
                    return redirect(request.path)
                self.log_change(request, obj, done)
                self.message_user(request, f"{done}: {obj}; the student is told.", messages.SUCCESS)
                return redirect("admin:accounts_limitrequest_changelist")
        return super().response_change(request, obj)


@admin.register(LimitGrant)
class LimitGrantAdmin(admin.ModelAdmin):
    """What is granted to whom until when. A grant stops applying at its end by itself."""

    list_display = (
        "user",
        "kind",
        "summary",
        "usage_factor",
        "starts_at",
        "ends_at",
        "ended_at",
        "granted_by",
    )
    list_filter = ("kind", ("ended_at", admin.EmptyFieldListFilter), "ends_at")
    search_fields = ("user__username",)
    list_select_related = ("user", "profile", "granted_by")
    readonly_fields = ("user", "request", "kind", "starts_at", "granted_by", "created_at", "ended_at")
    actions = ("end_now",)

    def has_add_permission(self, request) -> bool:
        return False  # a grant comes from approving a request

    @admin.display(description="Granted")
    def summary(self, obj: LimitGrant) -> str:
        return obj.summary()

    @admin.action(description="End the selected grants now", permissions=["change"])
    def end_now(self, request, queryset) -> None:
        def end(grant: LimitGrant) -> None:
            limit_grant_end_now(grant=grant, now=timezone.now())

        apply_to_each(self, request, queryset, end, "Ended", audit="Ended the grant now")
