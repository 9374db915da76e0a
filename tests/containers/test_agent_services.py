from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from containers import gpus
from containers.agent import read_facts
from containers.agent_selectors import served_hosts
from containers.agent_services import (
    AgentFacts,
    agent_claim,
    agent_heartbeat,
    agent_release,
    agent_silence_check,
)
from containers.gpus import ProbeResult
from containers.inventory_selectors import Health, agent_health, host_health
from containers.models import ContainerEvent, HostAgent
from tests.factories import HostFactory

pytestmark = pytest.mark.django_db
FACTS = AgentFacts(
    version="0.1.0",
    engine_version="24.0",
    nvml_driver="550.54",
    cuda_driver_version="12.4",
    disk_free_gb={"/mnt": 12.5},
)


def test_an_agent_claims_its_host_and_the_host_is_then_served_by_it(host, now):
    agent = agent_claim(host=host, holder="gpu-01:10:a", now=now)

    host.refresh_from_db()
    assert host.served_by_agent
    assert agent.holder == "gpu-01:10:a"
    assert agent.lease_expires_at > now


def test_a_second_agent_for_a_held_host_is_refused_and_names_the_holder(host, now):
    agent_claim(host=host, holder="gpu-01:10:a", now=now)

    with pytest.raises(ValidationError, match="already served by the agent gpu-01:10:a"):
        agent_claim(host=host, holder="gpu-01:11:b", now=now + timedelta(seconds=5))

    assert HostAgent.objects.get(host=host).holder == "gpu-01:10:a"


def test_a_crashed_agents_claim_lapses_and_another_may_take_the_host(host, now):
    agent_claim(host=host, holder="gpu-01:10:a", now=now)

    agent = agent_claim(host=host, holder="gpu-01:11:b", now=now + timedelta(minutes=5))

    assert agent.holder == "gpu-01:11:b"


def test_a_cleanly_stopped_agent_frees_the_host_at_once(host, now):
    agent_claim(host=host, holder="gpu-01:10:a", now=now)
    agent_release(host=host, holder="gpu-01:10:a")

    assert agent_claim(host=host, holder="gpu-01:11:b", now=now).holder == "gpu-01:11:b"


def test_the_heartbeat_renews_the_lease_and_stores_what_the_agent_sees(host, now):
    agent_claim(host=host, holder="h:1:a", now=now)
    later = now + timedelta(seconds=30)

    assert agent_heartbeat(host=host, holder="h:1:a", facts=FACTS, now=later)

    agent = HostAgent.objects.get(host=host)
    assert agent.last_seen_at == later
    assert agent.lease_expires_at > later
    assert (agent.engine_version, agent.nvml_driver, agent.disk_free_gb) == ("24.0", "550.54", {"/mnt": 12.5})
    assert agent.cuda_driver_version == "12.4"


def test_an_agent_that_lost_its_host_to_another_is_told_to_stop(host, now):
    agent_claim(host=host, holder="h:1:a", now=now)
    agent_claim(host=host, holder="h:2:b", now=now + timedelta(minutes=5))

    assert not agent_heartbeat(host=host, holder="h:1:a", facts=FACTS, now=now + timedelta(minutes=5))


def test_an_agent_is_online_then_stale_then_offline_as_its_silence_grows(host, now):
    agent = agent_claim(host=host, holder="h:1:a", now=now)

    assert agent_health(agent=agent, now=now + timedelta(seconds=60)) == Health.ONLINE
    assert agent_health(agent=agent, now=now + timedelta(minutes=3)) == Health.STALE
    assert agent_health(agent=agent, now=now + timedelta(minutes=11)) == Health.OFFLINE


def test_a_host_without_an_agent_is_served_centrally(host, now):
    assert host_health(host=host, now=now) == Health.CENTRAL


def test_a_silent_agent_raises_one_error_and_another_when_it_comes_back(host, now):
    agent_claim(host=host, holder="h:1:a", now=now)
    later = now + timedelta(minutes=2)

    agent_silence_check(now=later)
    agent_silence_check(now=later + timedelta(minutes=1))
    assert agent_heartbeat(host=host, holder="h:1:a", facts=FACTS, now=later + timedelta(minutes=2))
    agent_heartbeat(host=host, holder="h:1:a", facts=FACTS, now=later + timedelta(minutes=3))

    events = list(ContainerEvent.objects.filter(host=host).order_by("created_at"))
    signs = [(event.level, event.sign) for event in events]
    assert signs == [("ERROR", "AgentSilent"), ("ERROR", "AgentBack")]


def test_the_central_scheduler_serves_hosts_without_an_agent_and_an_agent_only_its_own(settings, now):
    central = HostFactory(name="gpu-central")
    remote = HostFactory(name="gpu-remote")
    agent_claim(host=remote, holder="r:1:a", now=now)

    settings.AIVC_HOST = ""
    assert list(served_hosts()) == [central]
    settings.AIVC_HOST = "gpu-remote"
    assert list(served_hosts()) == [remote]


def test_the_heartbeat_reports_the_engine_the_driver_and_the_free_disk_of_each_root(
    engine_host, fake_runtime, monkeypatch
):
    monkeypatch.setattr(
        gpus, "probe", lambda: ProbeResult(driver_version="550.54.15", cuda_driver_version="12.4")
    )

    facts = read_facts(engine_host)

    assert (facts.engine_version, facts.nvml_driver, facts.cuda_driver_version) == (
        "fake",
        "550.54.15",
        "12.4",
    )
    assert set(facts.disk_free_gb) == {
        engine_host.work_root,
        engine_host.backup_root,
        engine_host.dataset_root,
    }
    assert all(free is not None and free >= 0 for free in facts.disk_free_gb.values())


def test_an_unreadable_root_is_reported_as_unknown_not_raised(host, fake_runtime):
    host.work_root = "/nonexistent/aivc/work"

    assert read_facts(host).disk_free_gb["/nonexistent/aivc/work"] is None
