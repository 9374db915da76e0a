"""Shared by the admin tests: run an action on a changelist, read the messages it left."""

from datetime import datetime, timedelta

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.utils import timezone

from bookings.timeslots import slot_floor


def post_action(client, action: str, *objects, changelist: str, **extra):
    data = {"action": action, ACTION_CHECKBOX_NAME: [obj.pk for obj in objects], **extra}
    return client.post(changelist, data, follow=True)


def message_texts(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def slot(hours: float = 0) -> datetime:
    """The current half-hour slot, moved by `hours`."""
    return slot_floor(timezone.now()) + timedelta(hours=hours)
