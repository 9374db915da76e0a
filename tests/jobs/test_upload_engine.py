"""A DoPQ zip on the real Docker engine: its Dockerfile (FROM the offline test image, a RUN
and a CMD) is built by the host's agent, the job runs the image and succeeds with the
image's output in its log; a bad zip beside it fails on its own and stops nothing."""

import contextlib
import http.server
import ipaddress
import threading
import time
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from containers.tasks import reconcile
from jobs import logs
from jobs.build_services import job_submit_upload
from jobs.models import Job, JobBuild
from jobs.scheduling import run_pass
from jobs.tasks import build_job_image
from tests.factories import UserFactory
from tests.jobs.conftest import builds_fenced
from tests.jobs.dopq_zips import DOCKERFILE, dopq_zip

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def builds_on(settings, tmp_path):
    builds_fenced(settings, tmp_path)
    settings.JOB_BUILD_TIMEOUT_S = 120


@pytest.fixture
def built_images(docker_client):
    """Removes the images this test built (and only those)."""
    import docker

    tags: list[str] = []
    yield tags
    for tag in tags:
        # The failing zip built nothing: its tag is not there.
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


def until_finished(job: Job, *, timeout_s: float = 30) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run_pass(now=timezone.now())
        reconcile(wake=False)
        job = Job.objects.get(pk=job.pk)
        if job.is_finished:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job #{job.pk} still {job.status} after {timeout_s} s")


def test_a_zip_upload_builds_and_runs_beside_a_bad_one(
    engine_host, docker_scope, test_image, default_profile, built_images, docker_client
):
    user = UserFactory(username="m11007s05")
    # A line of this run's own, so parallel runs never share a tag.
    marker = f"RUN echo {uuid.uuid4().hex} > /run-id\n"
    bad_zip = dopq_zip(name="broken", dockerfile=DOCKERFILE + marker + "RUN exit 7\n")
    good_zip = dopq_zip(folder="project", dockerfile=DOCKERFILE + marker)
    bad = job_submit_upload(user=user, upload=bad_zip, host=engine_host, cpus=1, time_limit_minutes=5)
    good = job_submit_upload(user=user, upload=good_zip, host=engine_host, cpus=1, time_limit_minutes=5)
    built_images.extend([bad.image.reference, good.image.reference])

    assert build_job_image(bad.pk).startswith("build failed")
    assert build_job_image(good.pk).startswith("built")

    bad.refresh_from_db()
    assert bad.status == Job.Status.FAILED and "could not be built" in bad.status_message
    assert "returned a non-zero code: 7" in bad.build.message
    good_image = docker_client.images.get(good.image.reference)
    assert good_image.labels.get("aivc.job") == str(good.pk)

    good = until_finished(good)
    assert (good.status, good.exit_code) == (Job.Status.SUCCEEDED, 0), good.status_message
    log = logs.log_tail(job_id=good.pk, lines=10)
    assert "built in the image" in log and "hello from dopq" in log
    assert JobBuild.objects.get(job=good).status == JobBuild.Status.BUILT
    assert "Successfully" in logs.log_tail(job_id=good.pk, lines=20, build=True)


def test_a_build_past_its_time_limit_fails_its_job(
    engine_host, docker_scope, test_image, default_profile, built_images, settings
):
    settings.JOB_BUILD_TIMEOUT_S = 3
    user = UserFactory(username="m11007s05")
    slow = f"RUN echo {uuid.uuid4().hex} > /run-id && sleep 20\n"
    job = job_submit_upload(
        user=user,
        upload=dopq_zip(dockerfile=DOCKERFILE + slow),
        host=engine_host,
        cpus=1,
        time_limit_minutes=5,
    )
    built_images.append(job.image.reference)
    started = time.monotonic()
    assert build_job_image(job.pk).startswith("build failed")
    assert time.monotonic() - started < 15
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "longer than 3 s" in job.status_message


# Issue 21, H1 and H2: a student attacking through an upload, on the real engine.


@pytest.fixture
def host_listener(docker_client):
    """A web server on the host, on the address the engine's default bridge reaches the
    host by (what a build's RUN step or dockerd's own ADD fetch would use), recording every
    request it gets."""
    network = docker_client.networks.get("bridge")
    subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
    gateway = network.attrs["IPAM"]["Config"][0].get("Gateway") or str(ipaddress.ip_network(subnet)[1])
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"the GPU server's secret\n")

        def log_message(self, *args):
            pass

    servers = [http.server.ThreadingHTTPServer((address, 0), Handler) for address in (gateway, "127.0.0.1")]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://{server.server_address[0]}:{server.server_address[1]}/" for server in servers], seen
    for server in servers:
        server.shutdown()
        server.server_close()


def fetch(url: str) -> str:
    """A shell line that asks `url` for /run-step (busybox's nc: its static wget cannot
    resolve names and crashes)."""
    address, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return f"printf 'GET /run-step HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} {port}"


def submit(user, engine_host, dockerfile: str, name: str = "attack"):
    return job_submit_upload(
        user=user,
        upload=dopq_zip(name=name, dockerfile=dockerfile),
        host=engine_host,
        cpus=1,
        time_limit_minutes=5,
    )


def test_a_short_id_prefix_of_another_users_image_is_refused_in_from_and_copy_from(
    engine_host, docker_scope, test_image, default_profile, built_images, docker_client
):
    victim = UserFactory(username="m11007s06")
    secret = f"RUN echo {uuid.uuid4().hex} > /private.txt\n"
    theirs = submit(victim, engine_host, DOCKERFILE + secret, name="private")
    built_images.append(theirs.image.reference)
    assert build_job_image(theirs.pk).startswith("built")
    prefix = docker_client.images.get(theirs.image.reference).short_id.removeprefix("sha256:")[:6]

    attacker = UserFactory(username="m11007s05")
    for dockerfile in (
        f"FROM {prefix}\nCMD cat /private.txt\n",
        f"FROM {test_image}\nCOPY --from={prefix} /private.txt /stolen.txt\n",
    ):
        with pytest.raises(ValidationError, match="by its id"):
            submit(attacker, engine_host, dockerfile)
    assert not Job.objects.filter(user=attacker).exists()


def test_add_of_a_url_on_the_servers_loopback_is_refused_before_dockerd_can_fetch_it(
    engine_host, docker_scope, test_image, default_profile, host_listener
):
    urls, seen = host_listener
    attacker = UserFactory(username="m11007s05")
    for url in urls:
        with pytest.raises(ValidationError, match="may not fetch"):
            submit(attacker, engine_host, f"FROM {test_image}\nADD {url}secret /secret\n")
    assert seen == [] and not Job.objects.exists()


def test_a_run_step_cannot_reach_the_server_over_the_network(
    engine_host, docker_scope, test_image, default_profile, built_images, host_listener
):
    urls, seen = host_listener
    fetches = " ; ".join(fetch(url) for url in urls)
    attacker = UserFactory(username="m11007s05")
    job = submit(attacker, engine_host, f"FROM {test_image}\nRUN echo {uuid.uuid4().hex}; {fetches}; true\n")
    built_images.append(job.image.reference)
    assert build_job_image(job.pk).startswith("built")
    assert seen == []
    assert "secret" not in logs.log_tail(job_id=job.pk, lines=50, build=True)


def test_without_the_fence_the_same_run_step_reaches_the_server(
    engine_host, docker_scope, test_image, default_profile, built_images, host_listener, settings
):
    """The control of the test above: the listener is reachable from a build on the
    engine's bridge, so it is the fence's network mode that keeps the step away."""
    settings.JOB_BUILD_NETWORK = "bridge"
    urls, seen = host_listener
    job = submit(
        UserFactory(username="m11007s05"),
        engine_host,
        f"FROM {test_image}\nRUN echo {uuid.uuid4().hex}; {fetch(urls[0])}; true\n",
    )
    built_images.append(job.image.reference)
    build_job_image(job.pk)
    assert seen == ["/run-step"]


@pytest.fixture
def pids_fence(settings):
    """The build fence's parent cgroup, made for this test with a small pids limit (as the
    agent makes it when it runs as root; skipped where this process may not)."""
    from containers.build_fence import FenceMissing, ensure_pids_fence, pids_max_file

    parent = f"aivc-test-build-{uuid.uuid4().hex[:8]}"
    try:
        ensure_pids_fence(parent=parent, limit=64)
    except FenceMissing as error:
        pytest.skip(f"no pids fence on this machine: {error}")
    settings.JOB_BUILD_CGROUP_PARENT, settings.JOB_BUILD_PIDS_LIMIT = parent, 64
    folder = pids_max_file(parent).parent
    yield folder
    # The engine made the parent in every hierarchy (cgroup v1): remove each, once empty.
    made = [path for path in folder.parent.parent.glob(f"*/{parent}") if path.is_dir()] or [folder]
    deadline = time.monotonic() + 30
    while made and time.monotonic() < deadline:
        for path in list(made):
            with contextlib.suppress(OSError):
                for child in path.iterdir():
                    if child.is_dir():
                        child.rmdir()
                path.rmdir()
                made.remove(path)
        time.sleep(0.2)


def test_a_fork_bomb_in_run_is_bounded_by_the_pids_limit_and_the_time_limit(
    engine_host, docker_scope, test_image, default_profile, built_images, settings, pids_fence
):
    settings.JOB_BUILD_TIMEOUT_S, settings.JOB_BUILD_CPUS = 8, 0.5
    attacker = UserFactory(username="m11007s05")
    bomb = f"RUN echo {uuid.uuid4().hex}; bomb() {{ bomb | bomb & }}; bomb; sleep 60\n"
    job = submit(attacker, engine_host, f"FROM {test_image}\n{bomb}")
    built_images.append(job.image.reference)
    most, done = 0, threading.Event()

    def sample() -> None:
        nonlocal most
        while not done.is_set():
            with contextlib.suppress(OSError, ValueError):
                most = max(most, int((pids_fence / "pids.current").read_text()))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        outcome = build_job_image(job.pk)
    finally:
        done.set()
        sampler.join()
    assert outcome.startswith("build failed") and time.monotonic() - started < 30
    assert 16 <= most <= 64, most  # the bomb ran, and stopped at the parent's limit
    assert "can't fork" in logs.log_tail(job_id=job.pk, lines=200, build=True)
