"""Images ready before the start: when a reservation is made, the host's agent checks that
its engine holds the image and pulls it if not, recording the state on `ImagePresence`.
A missing or unpullable image shows to the student at once (as a friendly line) and to
maintainers as an event with the engine's own words, long before the start time."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from containers.models import ContainerEvent, Host, Image, ImagePresence
from containers.runtime import ContainerRuntime, EngineUnavailable, PullFailed
from containers.services import event_log

State = ImagePresence.State
Level = ContainerEvent.Level
# Pull progress arrives many times a second; the row is written at most this often.
PROGRESS_EVERY_S = 2.0
# A failed pull is reported once a period per host and image, not once per reservation.
PULL_FAILED_QUIET = timedelta(hours=1)


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
    does not answer raises `EngineUnavailable` and changes nothing (the next booking or
    the launch tries again)."""
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
        event_log(
            level=Level.ERROR,
            sign="ImagePullFailed",
            message=f"The image {image.reference} is not on {host.name} and pulling it failed ({error}); "
            "build or pull it there, or deactivate the image",
            host=host,
            now=now,
            quiet_for=PULL_FAILED_QUIET,
        )
        return image_presence_record(host=host, image=image, state=State.FAILED, now=now, message=str(error))
    event_log(
        level=Level.INFO, message=f"Pulled the image {image.reference} on {host.name}", host=host, now=now
    )
    return image_presence_record(host=host, image=image, state=State.PRESENT, now=now, progress="Pulled")
