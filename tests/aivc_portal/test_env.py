"""Settings read the environment strictly: a typo stops start-up and names the variable."""

import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from aivc_portal.env import (
    DATABASE_CACHE_TABLE,
    env_bool,
    env_cache,
    env_choice,
    env_dotted_path,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_range,
)


@pytest.mark.parametrize("value", ["1", "true", "True", " yes ", "ON"])
def test_true_words_are_true(monkeypatch, value):
    monkeypatch.setenv("AIVC_FLAG", value)
    assert env_bool("AIVC_FLAG", False) is True


@pytest.mark.parametrize("value", ["0", "false", "FALSE", "no", "off"])
def test_false_words_are_false(monkeypatch, value):
    monkeypatch.setenv("AIVC_FLAG", value)
    assert env_bool("AIVC_FLAG", True) is False


@pytest.mark.parametrize("value", ["ture", "2", "y", "enabled"])
def test_a_misspelt_boolean_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("AIVC_FLAG", value)
    with pytest.raises(ImproperlyConfigured, match=f"AIVC_FLAG='{value}' is not a boolean"):
        env_bool("AIVC_FLAG", False)


def test_unset_or_empty_takes_the_default(monkeypatch):
    monkeypatch.delenv("AIVC_FLAG", raising=False)
    assert env_bool("AIVC_FLAG", True) is True
    assert env_int("AIVC_FLAG", 7) == 7
    monkeypatch.setenv("AIVC_FLAG", "  ")
    assert env_bool("AIVC_FLAG", True) is True
    assert env_float("AIVC_FLAG", 0.5) == 0.5


@pytest.mark.parametrize("value", ["four", "4.5", "1e3", "0x10"])
def test_a_number_that_is_not_whole_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("AIVC_NUMBER", value)
    with pytest.raises(ImproperlyConfigured, match=r"AIVC_NUMBER=.* is not a whole number"):
        env_int("AIVC_NUMBER", 1)


def test_numbers_below_their_minimum_are_refused(monkeypatch):
    monkeypatch.setenv("AIVC_NUMBER", "-1")
    assert env_int("AIVC_NUMBER", 1) == -1
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env_int("AIVC_NUMBER", 1, minimum=0)


@pytest.mark.parametrize("value", ["fast", "nan", "inf"])
def test_a_float_that_is_no_finite_number_is_refused(monkeypatch, value):
    monkeypatch.setenv("AIVC_NUMBER", value)
    with pytest.raises(ImproperlyConfigured, match="AIVC_NUMBER"):
        env_float("AIVC_NUMBER", 0.5)


def test_lists_drop_blank_items(monkeypatch):
    monkeypatch.setenv("AIVC_LIST", "a.example, ,b.example,")
    assert env_list("AIVC_LIST", "") == ["a.example", "b.example"]


@pytest.mark.parametrize("value", ["10001", "10001-", "a-b", "11000-10001", "-5-3"])
def test_a_range_must_read_low_dash_high(monkeypatch, value):
    monkeypatch.setenv("AIVC_RANGE", value)
    with pytest.raises(ImproperlyConfigured, match="AIVC_RANGE"):
        env_range("AIVC_RANGE", "1-2")


def test_a_range_includes_both_ends(monkeypatch):
    monkeypatch.setenv("AIVC_RANGE", "10001-10003")
    assert list(env_range("AIVC_RANGE", "1-2")) == [10001, 10002, 10003]


def test_start_up_stops_on_debug_ture():
    """The whole settings module, as manage.py loads it, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env={"DEBUG": "ture", "SECRET_KEY": "x", "PATH": "/usr/bin:/bin", "AIVC_ENV_FILE": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    # One line naming the variable (manage.py prints configuration errors without a traceback).
    assert "aivc-portal: Environment variable DEBUG='ture' is not a boolean" in result.stderr


def test_a_dotted_path_is_taken_as_given(monkeypatch):
    monkeypatch.setenv("GPU_PROBE", "tests.containers.nvml_file_probe.JsonFileProbe")

    assert env_dotted_path("GPU_PROBE", "x.Y") == "tests.containers.nvml_file_probe.JsonFileProbe"


@pytest.mark.parametrize("value", ["NvmlProbe", "containers/gpus.py", "containers.gpus.", "a b.c"])
def test_a_value_that_is_no_dotted_path_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("GPU_PROBE", value)

    with pytest.raises(ImproperlyConfigured, match="GPU_PROBE"):
        env_dotted_path("GPU_PROBE", "containers.gpus.NvmlProbe")


# The cache, the log format and the metrics networks (docs/monitoring.md) ------------------


def test_the_cache_is_the_database_table_unless_a_url_names_another(monkeypatch):
    monkeypatch.delenv("CACHE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    cache = env_cache("CACHE_URL", "REDIS_URL")
    assert cache["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"
    assert cache["LOCATION"] == DATABASE_CACHE_TABLE


def test_redis_is_named_by_cache_url_or_else_redis_url(monkeypatch):
    monkeypatch.delenv("CACHE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/1")
    assert env_cache("CACHE_URL", "REDIS_URL") == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/1",
    }
    monkeypatch.setenv("CACHE_URL", "locmem://")
    assert env_cache("CACHE_URL", "REDIS_URL")["BACKEND"].endswith("LocMemCache")


def test_an_unknown_cache_url_names_the_variable_and_hides_its_password(monkeypatch):
    monkeypatch.setenv("CACHE_URL", "memcached://user:s3cret@cache:11211")
    with pytest.raises(ImproperlyConfigured, match="CACHE_URL='cache:11211' is not a cache URL") as error:
        env_cache("CACHE_URL")
    assert "s3cret" not in str(error.value)


def test_redis_without_its_package_is_a_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setenv("CACHE_URL", "redis://cache:6379/0")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImproperlyConfigured, match="CACHE_URL names Redis, but the redis package"):
        env_cache("CACHE_URL")


def test_the_log_format_is_plain_or_json(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert env_choice("LOG_FORMAT", "plain", ("plain", "json")) == "json"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT='xml' is not one of plain, json"):
        env_choice("LOG_FORMAT", "plain", ("plain", "json"))


def test_metrics_networks_take_addresses_and_cidrs(monkeypatch):
    import ipaddress

    monkeypatch.setenv("METRICS_ALLOWED_ADDRESSES", "10.1.2.3, 192.168.0.0/16,fd00::/8")
    assert env_networks("METRICS_ALLOWED_ADDRESSES", "") == (
        ipaddress.ip_network("10.1.2.3/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
