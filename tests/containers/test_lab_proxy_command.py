"""`manage.py lab_proxy` (started by `make run`) and how the Docker runtime reads the
address the proxy needs."""

import pytest
from django.core.management import CommandError, call_command

from containers.runtime import _network_address


def test_the_lab_proxy_needs_a_port(settings):
    settings.LAB_PROXY_PORT = 0
    with pytest.raises(CommandError, match="LAB_PROXY_PORT"):
        call_command("lab_proxy")


def test_the_address_is_read_on_the_portals_network(settings):
    settings.CONTAINER_NETWORK = "aivc-isolated"
    attrs = {
        "NetworkSettings": {
            "Networks": {"bridge": {"IPAddress": "172.17.0.9"}, "aivc-isolated": {"IPAddress": "172.18.0.4"}}
        }
    }
    assert _network_address(attrs) == "172.18.0.4"


def test_without_a_portal_network_the_default_bridge_is_read(settings):
    settings.CONTAINER_NETWORK = ""
    assert _network_address({"NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.9"}}}}) == (
        "172.17.0.9"
    )


def test_a_container_on_no_network_has_no_address(settings):
    settings.CONTAINER_NETWORK = "aivc-isolated"
    assert _network_address({}) == ""
    assert _network_address({"NetworkSettings": {"Networks": {"aivc-isolated": {"IPAddress": ""}}}}) == ""
