from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html_join

from accounts.models import CapabilityProfile, User
from accounts.selectors import capability_for, first_free_forward_port
from accounts.services import users_create_bulk
from containers.models import Host


@admin.register(CapabilityProfile)
class CapabilityProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "is_default", "cpus", "memory_gb", "gpus", "work_space_gb", "backup_space_gb")
    list_filter = ("is_default",)
    search_fields = ("name",)


class BulkCreateForm(forms.Form):
    usernames = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10}),
        help_text="Account ids, separated by spaces, commas or new lines.",
    )
    capability_profile = forms.ModelChoiceField(
        CapabilityProfile.objects.all(), required=False, help_text="Empty: the default profile."
    )

    def clean_usernames(self) -> list[str]:
        return [name for name in self.cleaned_data["usernames"].replace(",", " ").split() if name]


class UserCreationWithPortForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User

    def clean(self) -> dict:
        cleaned = super().clean()
        # A full port range is reported on the form instead of failing in save().
        first_free_forward_port()
        return cleaned


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    add_form = UserCreationWithPortForm
    list_display = ("username", "email", "forward_port", "capability_profile", "is_staff", "is_active")
    list_filter = ("is_staff", "is_active", "capability_profile", "must_change_password")
    list_select_related = ("capability_profile",)
    search_fields = ("username", "email", "first_name", "last_name")
    readonly_fields = ("effective_limits",)
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        (
            "Lab",
            {
                "fields": (
                    "forward_port",
                    "capability_profile",
                    "effective_limits",
                    "default_image",
                    "default_extra_command",
                    "ssh_public_keys",
                    "must_change_password",
                )
            },
        ),
    )
    change_list_template = "admin/accounts/user/change_list.html"

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
                    f"work={limit.work_space_gb} GB backup={limit.backup_space_gb} GB",
                )
            )
        return format_html_join("", "<div><b>{}</b>: {}</div>", rows) or "No hosts yet."

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
                )
            except ValidationError as error:
                form.add_error("usernames", error)
            else:
                messages.success(request, f"Created {len(created)} account(s).")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "created": created,
            "title": "Create accounts in bulk",
            "changelist_url": reverse("admin:accounts_user_changelist"),
        }
        return render(request, "admin/accounts/user/bulk_create.html", context)
