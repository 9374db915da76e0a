"""Queues scheduler tasks by dotted name, so a lower layer can wake a higher one without
importing it."""

import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def queue_task(dotted_name: str, *args, **kwargs) -> None:
    """Queues the task once the current transaction commits. A broker failure is logged and
    swallowed: the every-minute tick picks the work up anyway."""

    def enqueue() -> None:
        from django_q.tasks import async_task

        try:
            async_task(dotted_name, *args, **kwargs)
        except Exception:
            logger.exception("Could not queue %s; the next scheduled tick will do it.", dotted_name)

    transaction.on_commit(enqueue)
