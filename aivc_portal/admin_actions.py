"""Helpers for admin actions maintainers run weekly: each object's refusal becomes an admin
message (never a 500), and actions that need a value or a confirmation get one page."""

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse


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
) -> None:
    """Runs `service` on each object; a refusal becomes that object's error message, never a
    500, and does not stop the others."""
    succeeded = 0
    for obj in objects:
        try:
            service(obj)
        except ValidationError as error:
            modeladmin.message_user(request, f"{obj}: {' '.join(error.messages)}", messages.ERROR)
        else:
            succeeded += 1
    if succeeded:
        modeladmin.message_user(request, f"{done}: {succeeded}.", messages.SUCCESS)
