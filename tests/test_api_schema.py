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
    now = timezone.now()
    start = slot_floor(now) + SLOT
    for offset, status in enumerate(Reservation.Status.values):
        ReservationFactory(
            user=student,
            host=host,
            start=start
            + timedelta(days=offset)
            - (timedelta(hours=1) if status == "running" else timedelta()),
            end=start + timedelta(days=offset, hours=2),
            status=status,
        )
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


def fuzz_operation(label: str, *, headers: dict, base_url: str, examples: int) -> Counter:
    """Runs `examples` generated requests (valid and invalid by the schema) of one
    operation against the server; returns how many answered each status."""
    operation = OPERATIONS[label]
    # The password login is fuzzed without the token; everything else with it.
    headers = {} if operation.path == "/api/v1/auth/token/" else headers
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )
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
