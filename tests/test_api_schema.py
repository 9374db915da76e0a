"""Schemathesis against a live server: every operation of /api/v1/ with generated inputs,
no response a 500, every response as the schema says (status, content type, body).
AIVC_API_FUZZ_EXAMPLES sets the examples per operation (default 10, to stay within the
suite's time; tests/bench/test_api_fuzz.py runs thousands). On PostgreSQL in CI; SQLite
works too."""

import json
import os
from collections import Counter
from datetime import timedelta

import pytest
import schemathesis
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.token_services import api_token_create
from bookings.models import Reservation
from bookings.timeslots import SLOT, slot_floor
from tests.factories import (
    CapabilityProfileFactory,
    HostFactory,
    ImageFactory,
    ReservationFactory,
    UserFactory,
)

EXAMPLES = int(os.environ.get("AIVC_API_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def make_api_world(settings) -> dict:
    """A host, an image, a student with reservations in every state and a token, and a
    staff user, so generated requests reach real rows (ids 1..n are likely to exist)."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100000/min", "token_login": "100000/min"},
    }
    CapabilityProfileFactory(name="student", is_default=True, cpus=8, memory_gb=32, gpus=1)
    host = HostFactory(name="gpu-01", cpus=16, ram_gb=64, swap_gb=16, gpus=2)
    ImageFactory(reference="lab/aivc-server:latest", is_default=True)
    student = UserFactory(username="fuzzer", is_staff=True)
    this_slot = slot_floor(timezone.now())
    # One running now (ending with this slot), the other live ones ten days on or more,
    # so bookings from tomorrow for a few days can succeed; the rest are history.
    windows = {
        Reservation.Status.RUNNING: (this_slot - timedelta(hours=1), this_slot + SLOT),
        Reservation.Status.SCHEDULED: (
            this_slot + timedelta(days=10),
            this_slot + timedelta(days=10, hours=2),
        ),
        Reservation.Status.STARTING: (
            this_slot + timedelta(days=11),
            this_slot + timedelta(days=11, hours=2),
        ),
        Reservation.Status.BLOCKED: (this_slot + timedelta(days=12), this_slot + timedelta(days=12, hours=2)),
    }
    for offset, status in enumerate(Reservation.Status.values):
        past = (this_slot - timedelta(days=offset + 1), this_slot - timedelta(days=offset + 1) + SLOT)
        start, end = windows.get(status, past)
        ReservationFactory(user=student, host=host, start=start, end=end, status=status)
    _token, raw = api_token_create(user=student, name="fuzz")
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
def api_world(live_server, settings) -> dict:
    return make_api_world(settings)


def _schema() -> schemathesis.BaseSchema:
    """The schema /api/schema/ serves, built in-process at collection so every operation
    becomes one test; the calls themselves go to the live server."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(generated)))


OPERATIONS = {result.ok().label: result.ok() for result in _schema().get_all_operations()}


# Random text is almost never a time the booking rules accept, so requests that book or
# search also come with inputs a user would type, to reach the success paths (201/200
# bodies checked against the schema too) and the rules' refusals.
_REQUEST = {
    "host": st.sampled_from(["gpu-01", "gpu-01", "1", "nowhere"]),
    "start": st.sampled_from(["1-day", "1-day", "3-day", "now", "2026 01 01 10 00", "2099 01 01 10 00"]),
    "end": st.sampled_from(["1-day", "1-day", "2-day", "1-week", "15-day", "0-day", "1-day 2-day"]),
    "cpus": st.integers(min_value=0, max_value=10),
    "memory_gb": st.integers(min_value=0, max_value=40),
    "gpu_count": st.integers(min_value=0, max_value=2),
}
REALISTIC = {
    "POST /api/v1/reservations/": lambda op: st.fixed_dictionaries(_REQUEST).flatmap(
        lambda body: op.as_strategy(body=body)
    ),
    "GET /api/v1/earliest-fit/": lambda op: st.fixed_dictionaries(_REQUEST).flatmap(
        lambda query: op.as_strategy(query=query)
    ),
    "GET /api/v1/hosts/": lambda op: st.fixed_dictionaries(
        {"start": _REQUEST["start"], "end": _REQUEST["end"]}
    ).flatmap(lambda query: op.as_strategy(query=query)),
    "POST /api/v1/reservations/{id}/extend/": lambda op: st.fixed_dictionaries(
        {"end": _REQUEST["end"]}
    ).flatmap(lambda body: op.as_strategy(body=body)),
}


def fuzz_operation(label: str, *, headers: dict, base_url: str, examples: int) -> Counter:
    """Runs `examples` generated requests (valid and invalid by the schema) of one
    operation against the server; returns how many answered each status."""
    operation = OPERATIONS[label]
    # The password login is fuzzed without the token; everything else with it.
    headers = {} if operation.path == "/api/v1/auth/token/" else headers
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    if label in REALISTIC:
        strategies.append(REALISTIC[label](operation))
    cases = st.one_of(strategies)
    statuses: Counter = Counter()

    @given(case=cases)
    @hypothesis_settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    def call(case) -> None:
        response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
        statuses[response.status_code] += 1

    call()
    return statuses


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_answers_within_its_schema_and_never_500(label, api_world, live_server):
    statuses = fuzz_operation(label, headers=api_world, base_url=live_server.url, examples=EXAMPLES)
    # Generated requests must get past authentication, or the fuzzing tests only the 401.
    assert set(statuses) - {401}, statuses
