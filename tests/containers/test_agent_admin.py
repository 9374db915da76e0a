from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from containers.agent_services import agent_claim
from containers.models import HostAgent

pytestmark = pytest.mark.django_db


def test_the_host_list_shows_each_agents_health(admin_client, host):
    agent_claim(host=host, holder="gpu-01:1:a", now=timezone.now() - timedelta(minutes=3))

    page = admin_client.get(reverse("admin:containers_host_changelist"))

    assert page.status_code == 200
    assert b"stale" in page.content


def test_the_host_page_shows_the_folder_roots_the_agent_and_who_may_book(admin_client, host):
    agent_claim(host=host, holder="gpu-01:1:a", now=timezone.now())

    page = admin_client.get(reverse("admin:containers_host_change", args=[host.pk]))

    assert page.status_code == 200
    for text in (b"Folders on this server", b"gpu-01:1:a", b"ho may book this host"):
        assert text in page.content


def test_agent_rows_are_read_only_in_admin(admin_client, host):
    agent = agent_claim(host=host, holder="gpu-01:1:a", now=timezone.now())

    assert admin_client.get(reverse("admin:containers_hostagent_add")).status_code == 403
    page = admin_client.get(reverse("admin:containers_hostagent_change", args=[agent.pk]))
    assert page.status_code == 200
    admin_client.post(reverse("admin:containers_hostagent_change", args=[agent.pk]), {"holder": "forged"})
    assert HostAgent.objects.get(pk=agent.pk).holder == "gpu-01:1:a"
