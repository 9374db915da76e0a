from pathlib import Path

from django.conf import settings

from tests.environment import drop_portal_settings

ROOT = Path(__file__).resolve().parent.parent


def test_it_drops_a_portal_setting_a_maintainer_exported_but_keeps_the_harness_variables():
    shell = {
        "CONTAINER_PREFIX": "lab-",
        "PORT_RANGE": "20000-20010",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/aivc_ci",
        "AIVC_REQUIRE_DOCKER": "1",
        "HOME": "/root",
    }

    dropped = drop_portal_settings(ROOT, shell)

    assert dropped == ["CONTAINER_PREFIX", "PORT_RANGE"]
    assert shell == {
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/aivc_ci",
        "AIVC_REQUIRE_DOCKER": "1",
        "HOME": "/root",
    }


def test_the_suite_runs_on_the_documented_container_names():
    assert settings.CONTAINER_PREFIX == "aivc-"
    assert settings.CONTAINER_SCOPE == "aivc"
