"""The API fuzzing of tests/test_api_schema.py at full strength: AIVC_BENCH_FUZZ_EXAMPLES
(default 150) generated requests per operation, thousands in all; figures in
docs/benchmarks.md."""

import os
import time

import pytest

from tests.test_api_schema import OPERATIONS, fuzz_operation, make_api_world

pytestmark = pytest.mark.bench
EXAMPLES = int(os.environ.get("AIVC_BENCH_FUZZ_EXAMPLES", "150"))


@pytest.fixture
def api_world(live_server, settings) -> dict:
    return make_api_world(settings)


@pytest.mark.django_db(transaction=True)
def test_thousands_of_generated_requests_meet_the_schema_without_a_500(api_world, live_server):
    started = time.perf_counter()
    # One world for all: revoking tokens (which may hit the fuzzer's own) comes last.
    labels = sorted(OPERATIONS, key=lambda label: (label.startswith("DELETE"), label))
    statuses = {
        label: fuzz_operation(label, headers=api_world, base_url=live_server.url, examples=EXAMPLES)
        for label in labels
    }
    elapsed = time.perf_counter() - started
    total = sum(sum(counts.values()) for counts in statuses.values())
    print(f"\nAPI fuzz: {total} requests over {len(statuses)} operations in {elapsed:.1f} s")
    for label, counts in statuses.items():
        print(f"  {sum(counts.values()):5d}  {label}  {dict(sorted(counts.items()))}")
    assert total >= 1000
    assert all(set(counts) - {401} for counts in statuses.values())
