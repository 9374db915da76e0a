import pytest
from django_q.models import OrmQ

from aivc_portal.scheduler import queue_host_task, queue_task
from containers.agent_services import agent_claim

pytestmark = pytest.mark.django_db(transaction=True)


def queues() -> list[str]:
    return sorted(OrmQ.objects.values_list("key", flat=True))


def test_work_for_a_host_with_an_agent_is_queued_to_that_agents_cluster(host, now):
    agent_claim(host=host, holder="h:1:a", now=now)
    host.refresh_from_db()

    queue_host_task("containers.tasks.reconcile", host=host)

    assert queues() == ["aivc-gpu-01"]


def test_work_for_a_host_without_an_agent_goes_to_the_central_scheduler(host):
    queue_host_task("containers.tasks.reconcile", host=host)

    assert queues() == ["aivc"]


def test_what_an_agent_queues_for_itself_stays_on_its_server(settings):
    settings.AIVC_HOST = "gpu-07"

    queue_task("containers.tasks.wake_at_boundaries")

    assert queues() == ["aivc-gpu-07"]
