"""The nginx site and the systemd units as a lab installs them (deploy/)."""

import re
from pathlib import Path

from django.conf import settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ("aivc-web.service", "aivc-scheduler.service", "aivc-agent@.service")


def nginx_site() -> str:
    return (DEPLOY / "nginx.conf").read_text()


def unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_nginx_passes_the_host_with_its_port_so_csrf_holds_on_another_port():
    assert re.search(r"proxy_set_header Host \$http_host;", nginx_site())
    assert "$host;" not in nginx_site().split("return 301")[1]


def test_nginx_speaks_http_1_1_to_gunicorn_and_forwards_the_client():
    site = nginx_site()
    assert "proxy_http_version 1.1;" in site
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in site
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in site


def test_nginx_takes_an_upload_at_the_portals_limit():
    megabytes = int(re.search(r"client_max_body_size (\d+)m;", nginx_site()).group(1))
    assert megabytes * 1024 * 1024 > settings.JOB_UPLOAD_MAX_BYTES


def test_scheduler_and_agent_may_read_locked_folders_and_give_keys_to_root_and_no_more():
    for name in ("aivc-scheduler.service", "aivc-agent@.service"):
        service = unit(name)
        assert service["AmbientCapabilities"] == ["CAP_DAC_READ_SEARCH CAP_CHOWN"], name
        assert service["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH CAP_CHOWN"], name
        # NVML needs the GPUs' device nodes; the duplicate-use check other processes' cgroups.
        assert "PrivateDevices" not in service and "ProtectProc" not in service, name


def test_every_unit_reads_the_env_file_itself_and_keeps_state_in_var_lib():
    for name in UNITS:
        service = unit(name)
        assert service["Environment"][0] == "AIVC_ENV_FILE=/etc/aivc-portal/env", name
        assert "EnvironmentFile" not in service, name
        assert service["StateDirectory"] == ["aivc-portal"], name
        assert service["NoNewPrivileges"] == ["true"], name


def test_the_scheduler_starts_after_the_web_units_migration():
    assert "aivc-web.service" in unit("aivc-scheduler.service")["After"][0].split()
    web = unit("aivc-web.service")
    assert web["Type"] == ["notify"]
    assert "manage.py migrate --noinput" in web["ExecStartPre"][0]
    assert web["RuntimeDirectory"] == ["aivc-portal"]
