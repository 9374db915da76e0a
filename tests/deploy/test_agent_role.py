"""deploy/postgres/agent-role.sql: an agent's real work (a reconcile tick with the fake
runtime, a heartbeat, a GPU sample, a django-q task round trip) runs as the role it makes,
and what an attacker holding that role would try (an account's password hash, a capability
profile, a token, a booking's size) is refused by PostgreSQL."""

import shutil
import subprocess
from contextlib import contextmanager

import pytest
from django.db import ProgrammingError, connection, transaction
from django.utils import timezone

from accounts.models import ApiToken, CapabilityProfile, User
from bookings.models import Reservation
from containers import gpus, tasks
from containers.agent import read_facts
from containers.agent_services import agent_claim, agent_heartbeat
from containers.fake_runtime import FakeRuntime
from containers.gpus import FakeProbe
from containers.lifecycle import reconcile
from containers.models import ContainerEvent, HostAgent
from containers.telemetry.models import GpuSample
from jobs.models import Job
from jobs.scheduling import run_pass
from jobs.services import job_submit
from tests.containers.telemetry.helpers import reading
from tests.deploy.gunicorn_server import REPO, url_of_the_test_database
from tests.factories import ImageFactory, ReservationFactory, UserFactory, host_with_roots

ROLE = "aivc_agent_test"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def as_agent():
    if connection.vendor != "postgresql":
        pytest.skip("database roles are PostgreSQL's (run with DATABASE_URL=postgres://...)")
    if shutil.which("psql") is None:
        pytest.skip("psql (postgresql-client) is not installed")
    subprocess.run(
        [
            "psql", url_of_the_test_database(), "-q", "-v", "ON_ERROR_STOP=1",
            "-v", f"role={ROLE}", "-v", f"database={connection.settings_dict['NAME']}",
            "-f", str(REPO / "deploy" / "postgres" / "agent-role.sql"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip

    @contextmanager
    def agent():
        with connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {ROLE}")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET ROLE")

    return agent


@pytest.fixture
def lab(tmp_path, settings, default_profile, monkeypatch):
    settings.CONTAINER_RUNTIME = "containers.fake_runtime.FakeRuntime"
    settings.JOB_LOG_ROOT = tmp_path / "job-logs"
    settings.AIVC_HOST = "gpu1"  # as the agent of gpu1 runs
    FakeRuntime.reset()
    monkeypatch.setattr(gpus, "probe", FakeProbe([reading(0), reading(1)]).read)
    host = host_with_roots(tmp_path / "roots", name="gpu1", gpus=2)
    ImageFactory(reference="lab/aivc-server:latest", is_default=True)
    student = UserFactory(username="m11007s05", ssh_public_keys="ssh-ed25519 AAAA laptop")
    now = timezone.now()
    booking = ReservationFactory(
        user=student,
        host=host,
        start=now - timezone.timedelta(minutes=1),
        end=now + timezone.timedelta(hours=1),
    )
    job = job_submit(
        user=UserFactory(), command="python train.py", cpus=1, memory_gb=1, gpu_count=0,
        time_limit_minutes=30, host=host,
    )  # fmt: skip
    run_pass(now=now)  # the central scheduler, not the agent
    yield {"host": host, "student": student, "booking": booking, "job": job}
    FakeRuntime.reset()


def test_an_agent_does_its_work_with_the_least_privileged_role(as_agent, lab):
    from django_q.brokers import get_broker
    from django_q.models import Success
    from django_q.monitor import save_task
    from django_q.signing import SignedPackage
    from django_q.tasks import async_task

    host = lab["host"]
    with as_agent():
        reconcile(host_id=host.pk, wake=False)
        reconcile(host_id=host.pk, wake=False)  # a second tick over running containers
        agent_claim(host=host, holder="gpu1:1:test", now=timezone.now())
        assert agent_heartbeat(host=host, holder="gpu1:1:test", facts=read_facts(host), now=timezone.now())
        assert tasks.sample_gpus() == 2
        tasks.space_audit_user(user_id=lab["student"].pk, host_id=host.pk)
        # The cluster's own round trip: enqueue, take, run, store the result, acknowledge.
        broker = get_broker(list_key="aivc-agent-role-test")
        async_task("math.floor", 2.5, broker=broker, task_name="agent-role-probe")
        ack, payload = broker.dequeue()[0]
        task = SignedPackage.loads(payload)
        task.update(result=2, success=True, stopped=timezone.now())
        save_task(task, broker)
        broker.acknowledge(ack)

    assert Reservation.objects.get(pk=lab["booking"].pk).status == Reservation.Status.RUNNING
    assert Job.objects.get(pk=lab["job"].pk).status == Job.Status.RUNNING
    assert HostAgent.objects.filter(host=host).exists()
    assert GpuSample.objects.filter(gpu__host=host).count() == 2
    assert ContainerEvent.objects.filter(host=host).exists()
    assert Success.objects.filter(name="agent-role-probe").exists()


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(
            lambda lab: User.objects.filter(pk=lab["student"].pk).update(password="x"), id="password"
        ),
        pytest.param(
            lambda lab: User.objects.filter(pk=lab["student"].pk).update(is_superuser=True), id="flags"
        ),
        pytest.param(
            lambda lab: User.objects.filter(pk=lab["student"].pk).update(ssh_public_keys="k"), id="keys"
        ),
        pytest.param(lambda lab: CapabilityProfile.objects.update(gpus=8), id="profile"),
        pytest.param(
            lambda lab: ApiToken.objects.create(user=lab["student"], name="x", prefix="p"), id="token"
        ),
        pytest.param(lambda lab: ApiToken.objects.all().delete(), id="token-delete"),
        pytest.param(lambda lab: User.objects.create(username="intruder"), id="new-account"),
        pytest.param(lambda lab: type(lab["host"]).objects.update(work_root="/"), id="host-folders"),
    ],
)
def test_a_write_outside_the_agents_grants_is_refused(as_agent, lab, attack):
    with as_agent(), pytest.raises(ProgrammingError, match="permission denied"), transaction.atomic():
        attack(lab)
