"""Helpers for admin actions maintainers run weekly: each object's refusal becomes an admin
message (never a 500), actions that need a value or a confirmation get one page, and every
change is recorded: in the admin's history (who did what), and for a student's reservation
or job also in the student's event log."""

from collections.abc import Callable, Iterable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from accounts.models import User
from bookings.models import Reservation
from containers.events import changed_by_staff
from containers.services import event_record


def action_form_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    action: str,
    title: str,
    items: list[tuple[object, str]],
    submit_label: str,
    form: forms.Form | None = None,
    intro: str = "",
) -> TemplateResponse:
    """The intermediate page of an admin action that asks for a value or a confirmation."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "items": items,
        "intro": intro,
        "action": action,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "submit_label": submit_label,
    }
    return TemplateResponse(request, "admin/action_form.html", context)


def apply_to_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    objects: QuerySet,
    service: Callable[[object], object],
    done: str,
    *,
    audit: str,
) -> None:
    """Runs `service` on each object; a refusal becomes that object's error message, never a
    500, and does not stop the others. Each change is recorded in the admin's history as
    `audit`, naming the maintainer, in the same transaction as the change."""
    succeeded = 0
    for obj in objects:
        try:
            with transaction.atomic():
                service(obj)
                modeladmin.log_change(request, obj, audit)
        except ValidationError as error:
            modeladmin.message_user(request, f"{obj}: {' '.join(error.messages)}", messages.ERROR)
        else:
            succeeded += 1
    if succeeded:
        modeladmin.message_user(request, f"{done}: {succeeded}.", messages.SUCCESS)


def log_each(modeladmin: admin.ModelAdmin, request: HttpRequest, objects: Iterable, audit: str) -> None:
    """The admin's history of an action that changed `objects` (each by its own service)."""
    for obj in objects:
        modeladmin.log_change(request, obj, audit)


def tell_owner(
    request: HttpRequest,
    *,
    reservation: Reservation | None,
    user: User,
    subject: str,
    action: str,
    takes_time: bool,
) -> None:
    """A line in the owner's event log saying what a maintainer did, and who (their role and
    name): what an admin action does to a student's reservation or job, they can read."""
    event = changed_by_staff(
        subject=subject,
        action=action,
        actor=request.user.get_username(),
        is_superuser=request.user.is_superuser,
        takes_time=takes_time,
    )
    event_record(event=event, reservation=reservation, user=user)
