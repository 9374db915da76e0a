import pytest
from django.core.management import call_command
from django_q.models import Schedule

from containers.schedules import schedules_ensure
from tests.factories import HostFactory

pytestmark = pytest.mark.django_db


def test_every_host_gets_its_own_schedules_queued_to_its_agent():
    HostFactory(name="gpu-1")
    HostFactory(name="gpu-2")

    call_command("setup_schedules")
    call_command("setup_schedules")

    own = Schedule.objects.filter(name="reconcile containers @ gpu-2").get()
    assert own.cluster == "aivc-gpu-2"
    assert own.func == "containers.tasks.reconcile"
    assert Schedule.objects.filter(cluster="aivc-gpu-1").count() == 5
    # The central entries serve hosts without an agent and run the central checks.
    assert set(Schedule.objects.filter(cluster__isnull=True).values_list("func", flat=True)) >= {
        "containers.tasks.reconcile",
        "containers.tasks.check_agents",
    }


def test_a_renamed_hosts_old_schedules_are_removed():
    host = HostFactory(name="gpu-old")
    schedules_ensure()
    host.name = "gpu-new"
    host.save()

    schedules_ensure()

    assert not Schedule.objects.filter(name__endswith="@ gpu-old").exists()
    assert Schedule.objects.filter(cluster="aivc-gpu-new").count() == 5
