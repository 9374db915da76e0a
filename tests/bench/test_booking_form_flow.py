"""A student's real booking through gunicorn (GET the form, POST it), this code side by side
with a baseline revision in one run (`make bench`).

The baseline (AIVC_BENCH_BASELINE, default: where this branch left main) is exported with
`git archive` into a temporary folder and served by its own gunicorn on the same test
database; the two servers take turns, ROUNDS times each, with the same clients, so the
machine's load falls on both alike. The load only targets 127.0.0.1 and stops by itself.
"""

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from bookings.timeslots import SLOT, slot_floor
from tests.bench.conftest import image_found_on, machine
from tests.bench.test_booking_throughput import PASSWORD, ROOT, Client, free_port, start_gunicorn
from tests.factories import CapabilityProfileFactory, HostFactory, ImageFactory, UserFactory

pytestmark = [pytest.mark.bench, pytest.mark.argon2, pytest.mark.django_db(transaction=True)]

CLIENTS = int(os.environ.get("AIVC_BENCH_CLIENTS", "16"))
SECONDS = float(os.environ.get("AIVC_BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("AIVC_BENCH_ROUNDS", "2"))
HOSTS = 4


def baseline_tree(target: Path) -> str:
    revision = (
        os.environ.get("AIVC_BENCH_BASELINE")
        or subprocess.run(
            ["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    target.mkdir()
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return revision[:10]


def serve(tree: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    return start_gunicorn(port, {"PYTHONPATH": str(tree)}, log, cwd=tree), port


def flows(port: int, usernames: list[str], *, host_id: int, image_id: int, first_slot) -> int:
    """Each client GETs the form then POSTs a booking of its next half hour, for SECONDS;
    returns the bookings made (302s)."""
    clients = [Client(port) for _ in usernames]
    for client, username in zip(clients, usernames, strict=True):
        client.log_in(username)
    done, lock = [0], threading.Lock()
    stop_at = time.monotonic() + SECONDS

    def work(client: Client, offset: int) -> None:
        slot = offset
        while time.monotonic() < stop_at:
            start = timezone.localtime(first_slot + slot * SLOT)
            end = start + SLOT
            slot += 1
            status, _ = client.request("GET", "/reservations/new/")
            assert status == 200
            status, _ = client.request(
                "POST",
                "/reservations/new/",
                {
                    "csrfmiddlewaretoken": client.token,
                    "host": host_id,
                    "start_date": f"{start:%Y-%m-%d}",
                    "start_time": f"{start:%H:%M}",
                    "end_kind": "at",
                    "end_date": f"{end:%Y-%m-%d}",
                    "end_time": f"{end:%H:%M}",
                    "cpus": "1",
                    "memory_gb": "1",
                    "gpu_count": "0",
                    "image": image_id,
                    "extra_command": "",
                },
            )
            if status == 302:
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=work, args=(client, 0)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 120)
    return done[0]


def test_the_booking_flow_side_by_side_with_the_baseline(write_figures, tmp_path):
    assert connection.vendor == "postgresql", "run the benchmark on PostgreSQL (DATABASE_URL)"
    CapabilityProfileFactory(is_default=True, cpus=8, memory_gb=32, gpus=2)
    image = ImageFactory(is_default=True)
    hosts = [HostFactory(name=f"bench-{n}", cpus=64, ram_gb=256, swap_gb=64, gpus=8) for n in range(HOSTS)]
    for host in hosts:
        image_found_on(host=host, image=image, now=timezone.now())
    users = [UserFactory(username=f"flow{n:02d}", password=PASSWORD).username for n in range(CLIENTS)]
    revision = baseline_tree(tmp_path / "baseline")
    trees = {"baseline": tmp_path / "baseline", "this code": ROOT}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    # Each turn books on its own host and its own two days, so no turn meets another's bookings.
    first = slot_floor(timezone.now()) + 2 * SLOT
    turn = 0
    for _round in range(ROUNDS):
        for name, tree in trees.items():
            server, port = serve(tree, tmp_path / f"{name}-{turn}.log")
            try:
                made = flows(
                    port,
                    users,
                    host_id=hosts[turn % HOSTS].pk,
                    image_id=image.pk,
                    first_slot=first + turn * 96 * SLOT,
                )
            finally:
                server.terminate()
                server.wait(timeout=30)
            rates[name].append(made / SECONDS)
            turn += 1
    best = {name: max(values) for name, values in rates.items()}
    lines = [
        "# The booking flow (GET the form, POST it), side by side",
        "",
        f"`make bench` (tests/bench/test_booking_form_flow.py), PostgreSQL, {machine()}; "
        f"{CLIENTS} clients, {HOSTS} hosts, turns of {SECONDS:.0f} s, {ROUNDS} each, baseline {revision}.",
        "",
        "| code | flows/s per turn | best |",
        "|---|---|---:|",
        *(
            f"| {name} | {', '.join(f'{rate:.1f}' for rate in values)} | {best[name]:.1f} |"
            for name, values in rates.items()
        ),
        "",
        f"Ratio (best this code / best baseline): {best['this code'] / max(best['baseline'], 1e-9):.2f}x. "
        f"Load average after the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
    ]
    write_figures("booking-form-flow.md", "\n".join(lines))
    assert all(value > 0 for values in rates.values() for value in values)
