"""A fuzz of every page and form of the portal (the URL conf walked, the API left to
tests/bench/test_api_fuzz.py): AIVC_BENCH_FORM_FUZZ (default 10,000) generated requests, as
the owner of the objects and as another student, GET with bad query strings and POST with
bad form fields (wrong types, huge and negative numbers, NUL, unicode, empty, missing).
Counts the answers by status; any 500 fails it. Figures in docs/benchmarks.md."""

import os
import random
import re
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.channel_services import calendar_feed_token
from bookings.models import Reservation
from bookings.timeslots import slot_floor
from jobs.services import job_submit
from tests.factories import (
    CapabilityProfileFactory,
    ImageFactory,
    ReservationFactory,
    UserFactory,
    host_with_roots,
)

pytestmark = pytest.mark.bench
REQUESTS = int(os.environ.get("AIVC_BENCH_FORM_FUZZ", "10000"))
SKIPPED_PREFIXES = ("admin/", "api/", "i18n/", "accounts/logout/")
BAD = [
    "", " ", "-1", "0", "-0", "1.5", "1e309", "NaN", "inf", "99999999999999999999999999",
    "-99999999999999999999", "2147483648", "9223372036854775808", "0x10", "\x00", "a\x00b",
    "é漢字🙂", "\u202e", "\ud7ff", "<script>alert(1)</script>", "../../etc/passwd", "/", "%", "%s%n",
    "2026-13-45", "2026-02-30 25:61", "now", "+1d", "1-day", "999-day", "true", "null", "[]",
    "{}", "'; DROP TABLE x; --", "a" * 5000, "1" * 400, "--rm", "$(id)", "\n\r", "🙂" * 300,
]  # fmt: skip
FIELD = re.compile(r"<(?:input|select|textarea|button)\b[^>]*\bname=\"([^\"]+)\"[^>]*>", re.I)
VALUE = re.compile(r"\bvalue=\"([^\"]*)\"", re.I)


def _patterns(resolver: URLResolver, prefix: str = "") -> list[str]:
    found = []
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found += _patterns(entry, route)
        elif isinstance(entry, URLPattern):
            found.append(route)
    return found


def _world(tmp_path) -> dict:
    CapabilityProfileFactory(name="student", is_default=True, cpus=8, memory_gb=32, gpus=1)
    host = host_with_roots(tmp_path, name="gpu-01", cpus=16, ram_gb=64, swap_gb=16, gpus=2)
    ImageFactory(reference="lab/aivc-server:latest", is_default=True)
    owner = UserFactory(username="owner", is_staff=True)
    other = UserFactory(username="other")
    slot = slot_floor(timezone.now())
    reservation = ReservationFactory(
        user=owner, host=host, start=slot - timedelta(hours=1), end=slot + timedelta(hours=2),
        status=Reservation.Status.RUNNING,
    )  # fmt: skip
    job = job_submit(
        user=owner, command="python x.py", cpus=1, memory_gb=1, gpu_count=0, time_limit_minutes=5, host=host
    )
    return {
        "users": [owner, other],
        "ids": [reservation.pk, job.pk, host.pk, 0, 1, 2, 99999999, 2**31, 2**63, 10**30],
        "tokens": [calendar_feed_token(user=owner), "1.abc", "x" * 300, "0.", ".."],
    }


def _fill(route: str, world: dict, rng: random.Random) -> str:
    route = re.sub(r"<int:\w+>", lambda _: str(rng.choice(world["ids"])), route)
    route = re.sub(r"<(?:str|slug|path):\w+>", lambda _: rng.choice(world["tokens"]), route)
    return "/" + route.lstrip("^").rstrip("$").replace("\\", "")


def _fields(client: Client, url: str, cache: dict) -> dict[str, list[str]]:
    """The names of a page's form fields, with the values its page offers (choices, buttons)."""
    if url not in cache:
        response = client.get(url)
        html = response.content.decode(errors="replace") if response.status_code == 200 else ""
        fields: dict[str, list[str]] = {}
        for match in FIELD.finditer(html):
            value = VALUE.search(match.group(0))
            fields.setdefault(match.group(1), []).append(value.group(1) if value else "")
        fields.pop("csrfmiddlewaretoken", None)
        cache[url] = fields
    return cache[url]


def _bad_data(fields: dict[str, list[str]], rng: random.Random) -> dict[str, str]:
    data = {}
    for name, offered in fields.items():
        roll = rng.random()
        if roll < 0.25:
            continue  # missing
        data[name] = rng.choice(offered) if roll < 0.5 and offered else rng.choice(BAD)
    if rng.random() < 0.2:
        data[rng.choice(["x", "pk", "id", "action", "\u00e9"])] = rng.choice(BAD)
    return data


@pytest.mark.django_db(transaction=True)
def test_ten_thousand_bad_inputs_to_every_page_and_form_answer_no_500(tmp_path, settings):
    settings.AXES_ENABLED = False
    world = _world(tmp_path)
    routes = [r for r in _patterns(get_resolver()) if not r.lstrip("^").startswith(SKIPPED_PREFIXES)]
    rng = random.Random(21)
    clients = []
    for user in world["users"]:
        client = Client(raise_request_exception=False)
        client.force_login(user)
        clients.append(client)
    counts: Counter = Counter()
    failures: list[str] = []
    cache: dict = {}
    started = time.perf_counter()
    for number in range(REQUESTS):
        client = clients[number % 2]
        url = _fill(routes[number % len(routes)], world, rng)
        if rng.random() < 0.5:
            query = {
                rng.choice(["from", "to", "q", "page", "host", "path", "day", "week", "date"]): rng.choice(
                    BAD
                )
            }
            response = client.get(url, query)
        else:
            response = client.post(url, _bad_data(_fields(client, url, cache), rng))
        counts[response.status_code] += 1
        if response.status_code == 500:  # /healthz answers 503 by design when a part is down
            failures.append(f"{response.request['REQUEST_METHOD']} {url}")
    elapsed = time.perf_counter() - started
    print(f"\nForm fuzz: {REQUESTS} requests over {len(routes)} URL patterns in {elapsed:.1f} s")
    print(f"  statuses: {dict(sorted(counts.items()))}; answers of 500: {counts[500]}")
    for failure in sorted(set(failures))[:40]:
        print(f"  500: {failure}")
    assert not failures
