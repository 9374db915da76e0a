"""Images ready before the start: when a reservation is made, the host's agent checks that
its engine holds the image and pulls it if not, recording the state on `ImagePresence`.
A missing or unpullable image shows to the student at once (as a friendly line) and to
maintainers as an event with the engine's own words, long before the start time."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from aivc_portal.scheduler import queue_task
from aivc_portal.task_names import PREPARE_IMAGE_TASK
from bookings.models import Reservation
from containers import events
from containers.models import Host, Image, ImagePresence
from containers.runtime import ContainerRuntime, EngineUnavailable, PullFailed
from containers.services import event_record

State = ImagePresence.State
# Pull progress arrives many times a second; the row is written at most this often.
PROGRESS_EVERY_S = 2.0
# A failed pull is reported once a period per host and image, not once per reservation.
PULL_FAILED_QUIET = timedelta(hours=1)
# A pull still marked running after this long died with its agent; the launch queues another.
PULL_STALE = timedelta(minutes=30)


def image_presence_record(
    *, host: Host, image: Image, state: str, now: datetime, progress: str = "", message: str = ""
) -> ImagePresence:
    presence, _ = ImagePresence.objects.update_or_create(
        host=host,
        image=image,
        defaults={
            "state": state,
            "progress": progress[:200],
            "message": message,
            "checked_at": now,
        },
    )
    return presence


def image_prepare(*, host: Host, image: Image, runtime: ContainerRuntime, now: datetime) -> ImagePresence:
    """Makes sure the host's engine holds the image: present, or pulled now. An engine that
    does not answer raises `EngineUnavailable`, leaving the image marked missing (the
    launch queues another check)."""
    if runtime.image_present(image.reference):
        return image_presence_record(host=host, image=image, state=State.PRESENT, now=now)
    image_presence_record(host=host, image=image, state=State.PULLING, now=now, progress="Starting the pull")
    last_write = time.monotonic()

    def progress(line: str) -> None:
        nonlocal last_write
        if time.monotonic() - last_write >= PROGRESS_EVERY_S:
            ImagePresence.objects.filter(host=host, image=image).update(progress=line[:200])
            last_write = time.monotonic()

    try:
        runtime.pull_image(image.reference, progress=progress)
    except EngineUnavailable:
        image_presence_record(host=host, image=image, state=State.MISSING, now=now)
        raise
    except PullFailed as error:
        event = events.image_pull_failed(reference=image.reference, host_name=host.name, error=error)
        event_record(event=event, host=host, now=now, quiet_for=PULL_FAILED_QUIET)
        return image_presence_record(host=host, image=image, state=State.FAILED, now=now, message=str(error))
    event_record(
        event=events.image_pulled(reference=image.reference, host_name=host.name), host=host, now=now
    )
    return image_presence_record(host=host, image=image, state=State.PRESENT, now=now, progress="Pulled")


def image_prepare_for_reservation(*, reservation_id: int, runtime_for, now: datetime) -> str:
    """The agent's task body: prepares a reservation's image on its host. `runtime_for`
    returns the host's runtime. Returns a one-line summary for django-q."""
    reservation = Reservation.objects.select_related("host", "image").filter(pk=reservation_id).first()
    if reservation is None or reservation.image is None or not reservation.is_live:
        return "nothing to prepare"
    try:
        presence = image_prepare(
            host=reservation.host, image=reservation.image, runtime=runtime_for(reservation.host), now=now
        )
    except EngineUnavailable as error:
        return f"engine unavailable: {error}"
    return f"{presence.image.reference} on {presence.host.name}: {presence.state}"


def image_launch_waits(*, reservation: Reservation, now: datetime) -> bool:
    """At launch the engine lacks the reservation's image. True while the host's agent pulls
    it (a check is queued now if none runs), so the next tick launches; False when a pull
    already failed, and the launch fails."""
    presence = ImagePresence.objects.filter(
        host_id=reservation.host_id, image_id=reservation.image_id
    ).first()
    if presence is not None and presence.state == State.FAILED:
        return False
    pulling = (
        presence is not None and presence.state == State.PULLING and now - presence.checked_at < PULL_STALE
    )
    if not pulling:
        image_presence_record(
            host=reservation.host, image=reservation.image, state=State.PULLING, now=now, progress="Queued"
        )
        queue_task(PREPARE_IMAGE_TASK, reservation_id=reservation.pk)
    return True
