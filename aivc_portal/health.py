"""/healthz: whether this portal can do its work, for a load balancer, systemd or a monitor.

No login and no throttle: a probe must get an answer from a portal whose sessions, cache or
accounts are what is broken. It answers 200 when the database answers, the task broker
answers and at least one host is served by a live agent (or, for hosts without one, a live
central scheduler); otherwise 503. The body says which part failed, never why in detail
(error text can carry addresses and names a stranger should not read): the logs say why."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django_q.brokers import get_broker

from containers.agent_selectors import serving_health
from containers.inventory_selectors import Health

logger = logging.getLogger(__name__)

OK = "ok"
ERROR = "error"
UNKNOWN = "unknown"


@dataclass
class HealthReport:
    database: str
    broker: str
    agents: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return (
            self.database == OK
            and self.broker == OK
            and any(health == Health.ONLINE for health in self.agents.values())
        )

    def as_dict(self) -> dict[str, object]:
        return {"database": self.database, "broker": self.broker, "agents": self.agents}


def _database() -> str:
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        logger.warning("Health check: the database does not answer.", exc_info=True)
        return ERROR
    return OK


def _broker() -> str:
    """The django-q broker: with the ORM broker (the default) its queue table, else Redis."""
    try:
        broker = get_broker()
        if broker.ping() is False:
            return ERROR
        broker.queue_size()
    except Exception as error:  # Each broker raises its own client's errors.
        logger.warning("Health check: the task broker does not answer (%s).", type(error).__name__)
        return ERROR
    return OK


def health_report(*, now: datetime) -> HealthReport:
    report = HealthReport(database=_database(), broker=UNKNOWN)
    if report.database != OK:
        return report  # everything else is read from the database
    report.broker = _broker()
    try:
        report.agents = {name: str(health) for name, health in serving_health(now=now).items()}
    except DatabaseError:
        logger.warning("Health check: reading the agents failed.", exc_info=True)
        report.database = ERROR
    return report


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    report = health_report(now=timezone.now())
    return JsonResponse(report.as_dict(), status=200 if report.healthy else 503)
