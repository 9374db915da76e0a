"""DoPQ uploads through the service and the host agent's build, on the fake runtime: the
job waits while its image builds, a failed build fails only its own job, and the built
image is that user's alone."""

import json
import os
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import translation
from django_q.models import OrmQ

from aivc_portal.task_names import BUILD_JOB_IMAGE_TASK
from bookings.services import resolve_image
from containers.fake_runtime import FakeRuntime
from containers.job_builds import built_images_prune
from containers.models import ContainerEvent, Image
from containers.runtime import BuiltImage, get_runtime
from containers.schedules import host_local_schedules
from containers.tasks import prune_built_images
from jobs import logs, selectors
from jobs.build_contexts import context_path
from jobs.build_services import build_contexts_sweep, builds_requeue, job_submit_upload
from jobs.models import Job, JobBuild
from jobs.services import job_cancel
from jobs.tasks import build_job_image
from tests.factories import UserFactory, local
from tests.jobs.conftest import builds_fenced
from tests.jobs.dopq_zips import dopq_zip
from tests.jobs.test_uploads import zip_bomb

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 2, 10, 10)


@pytest.fixture(autouse=True)
def english():
    """The messages are checked in English, whatever language an earlier test left active."""
    with translation.override("en"):
        yield


@pytest.fixture(autouse=True)
def builds_on(settings, tmp_path):
    builds_fenced(settings, tmp_path)


def upload(user, host, data=None, **kwargs):
    values = {"cpus": 1, "time_limit_minutes": 30}
    values.update(kwargs)
    return job_submit_upload(user=user, upload=data or dopq_zip(), host=host, now=NOW, **values)


def test_it_queues_the_job_with_a_per_user_image_and_waits_for_the_build(student, host, fake_runtime):
    job = upload(student, host, dopq_zip(required_memory="2g", run_params={"command": "python train.py"}))
    assert (job.status, job.host, job.memory_gb, job.gpu_count, job.command) == (
        Job.Status.QUEUED,
        host,
        2,
        0,
        "python train.py",
    )
    assert job.image.reference.startswith("aivc-build/m11007s05/mnist:")
    assert not job.image.is_active
    assert job.build.status == JobBuild.Status.BUILDING
    assert [row.pk for row in selectors.queued_rows()] == []  # the scheduler passes it over


def test_a_built_image_lets_the_scheduler_start_the_job_and_keeps_the_build_log(
    student, host, fake_runtime, django_capture_on_commit_callbacks
):
    job = upload(student, host)
    stored = context_path(job.build.context_file)
    assert stored.stat().st_size == job.build.context_size > 0 and stored.stat().st_mode & 0o777 == 0o600
    with django_capture_on_commit_callbacks(execute=True):
        assert build_job_image(job.pk, now=NOW).startswith("built aivc-build/m11007s05/mnist:")
    build = JobBuild.objects.get(job=job)
    assert build.status == JobBuild.Status.BUILT and build.context_file == "" and not stored.exists()
    tag, context = FakeRuntime.engine_for(host).builds[0]
    assert tag == job.image.reference and context
    assert FakeRuntime.engine_for(host).build_memory == [job.memory_gb * 1024**3]
    assert "Successfully tagged" in logs.log_tail(job_id=job.pk, lines=5, build=True)
    assert [row.pk for row in selectors.queued_rows()] == [job.pk]
    assert build_job_image(job.pk, now=NOW) == "nothing to build"  # a second run does nothing


def test_a_failed_build_fails_only_its_own_job_with_a_message_and_an_event(student, host, fake_runtime):
    bad = upload(student, host)
    FakeRuntime.engine_for(host).build_failure = "The command '/bin/sh -c exit 1' returned a non-zero code: 1"
    assert build_job_image(bad.pk, now=NOW).startswith("build failed")
    FakeRuntime.engine_for(host).build_failure = ""
    good = upload(student, host, dopq_zip(name="second"))
    build_job_image(good.pk, now=NOW)
    bad.refresh_from_db()
    assert bad.status == Job.Status.FAILED and "could not be built" in bad.status_message
    assert "non-zero code" in bad.build.message
    assert "non-zero code" in logs.log_tail(job_id=bad.pk, lines=5, build=True)
    assert ContainerEvent.objects.filter(sign="JobBuildFailed", message__contains=f"#{bad.pk}").exists()
    assert [row.pk for row in selectors.queued_rows()] == [good.pk]


def test_an_unreachable_engine_leaves_the_build_waiting_for_another_try(student, host, fake_runtime):
    job = upload(student, host)
    FakeRuntime.engine_for(host).reachable = False
    with pytest.raises(Exception, match="unreachable"):
        build_job_image(job.pk, now=NOW)
    FakeRuntime.engine_for(host).reachable = True
    assert build_job_image(job.pk, now=NOW).startswith("built")


def test_a_cancelled_job_is_not_built(student, host, fake_runtime):
    job = upload(student, host)
    job_cancel(job=job, now=NOW)
    assert build_job_image(job.pk, now=NOW) == "nothing to build"
    assert FakeRuntime.engine_for(host).builds == []


def test_another_user_cannot_book_or_submit_with_the_built_image(student, host, fake_runtime):
    job = upload(student, host)
    with pytest.raises(ValidationError):
        resolve_image(job.image.reference, user=UserFactory(username="someone"))
    with pytest.raises(ValidationError):
        resolve_image(job.image.pk, user=UserFactory(username="other"))


def test_two_users_uploading_the_same_zip_get_their_own_images(student, host, fake_runtime):
    other = UserFactory(username="m11007s06")
    mine, theirs = upload(student, host), upload(other, host)
    assert mine.image != theirs.image
    assert Image.objects.filter(reference__startswith="aivc-build/").count() == 2


def test_it_refuses_uploads_when_the_lab_has_builds_off(student, host, settings):
    settings.JOB_BUILDS_ALLOWED = False
    with pytest.raises(ValidationError, match="does not build images"):
        upload(student, host)
    assert not Job.objects.exists()


def test_it_needs_a_host_to_build_on(student, host):
    with pytest.raises(ValidationError, match="Choose the host"):
        upload(student, None)


def test_a_bad_upload_is_refused_and_creates_nothing(student, host):
    with pytest.raises(ValidationError, match="may not set privileged"):
        upload(student, host, dopq_zip(run_params={"privileged": True}))
    assert not Job.objects.exists() and not Image.objects.filter(is_active=False).exists()


def test_it_applies_the_job_rules_to_the_configs_resources(student, host):
    with pytest.raises(ValidationError):
        upload(student, host, dopq_zip(required_memory="500g"))
    assert not Job.objects.exists() and not Image.objects.filter(is_active=False).exists()


def queued_builds() -> list[str]:
    return [task.func() for task in OrmQ.objects.all() if task.func() == BUILD_JOB_IMAGE_TASK]


def test_a_build_nobody_picked_up_is_asked_for_again_after_a_minute(
    student, host, fake_runtime, django_capture_on_commit_callbacks
):
    job = upload(student, host)
    OrmQ.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        assert builds_requeue(now=NOW + timedelta(seconds=30)) == 0
        assert builds_requeue(now=NOW + timedelta(minutes=2)) == 1
    assert queued_builds() == [BUILD_JOB_IMAGE_TASK]
    build_job_image(job.pk, now=NOW + timedelta(minutes=2))
    assert builds_requeue(now=NOW + timedelta(minutes=3)) == 0


def test_a_claim_older_than_any_build_is_released_and_asked_for_again(student, host, fake_runtime, settings):
    job = upload(student, host)
    JobBuild.objects.filter(job=job).update(started_at=NOW)  # an agent that died mid-build
    late = NOW + timedelta(seconds=settings.JOB_BUILD_TIMEOUT_S) + timedelta(minutes=1)
    assert builds_requeue(now=late) == 0  # it may still be building
    assert builds_requeue(now=late + timedelta(minutes=2)) == 1
    assert build_job_image(job.pk, now=late).startswith("built")


def test_a_dockerfile_cannot_start_from_another_users_built_image(student, host, fake_runtime):
    theirs = upload(UserFactory(username="m11007s06"), host)
    for line in (f"FROM {theirs.image.reference}\n", f"COPY --from={theirs.image.reference} /data /data\n"):
        attack = dopq_zip(name="thief", dockerfile=f"FROM aivc-test/busybox:latest\n{line}")
        with pytest.raises(ValidationError, match="built for someone else: aivc-build/m11007s06/mnist"):
            upload(student, host, attack)
    assert not Job.objects.filter(user=student).exists()


@pytest.mark.parametrize(
    ("dockerfile", "reason"),
    [
        ("ARG B=aivc-buil\nFROM ${B}d/m11007s06/mnist:{tag}\n", "through a variable"),
        ("FROM aivc-test/busybox:latest\nARG S\nCOPY --from=$S /data /data\n", "through a variable"),
        ("FROM aivc-buil\\\nd/m11007s06/mnist:{tag}\n", "built for someone else"),
        ("# escape=`\nFROM aivc-build/m11007s06/`\nmnist:{tag}\n", "built for someone else"),
        (
            "FROM aivc-test/busybox:latest\nCOPY\t--from=aivc-build/m11007s06/mnist:{tag} /d /d\n",
            "someone else",
        ),
        ("FROM aivc-test/busybox:latest\nRUN echo \\\u00a0\nFROM ${A}${B}\n", "U\\+00A0"),
        ("FROM aivc-test/busybox:latest\nRUN echo \\\r\r\nFROM {short_id}\n", "U\\+000D"),
        ("FROM aivc-test/busybox:latest\nRUN echo \\\u2028FROM {short_id}\n", "U\\+2028"),
        (
            "\ufeff# escape=`\nFROM aivc-test/busybox:latest\n"
            "RUN echo \\\nFROM aivc-build/m11007s06/mnist:{tag}\n",
            "someone else",
        ),
        ("FROM sha256:{digest}\n", "by its id"),
        ("FROM {short_id}\n", "by its id"),
    ],
)
def test_a_dockerfile_cannot_reach_another_users_build_by_spelling_it_differently(
    student, host, fake_runtime, dockerfile, reason
):
    theirs = upload(UserFactory(username="m11007s06"), host)
    tag = theirs.image.reference.rsplit(":", 1)[1]
    digest = "0123456789abcdef" * 4
    attack = dockerfile.replace("{tag}", tag).replace("{digest}", digest).replace("{short_id}", digest[:12])
    with pytest.raises(ValidationError, match=reason):
        upload(student, host, dopq_zip(name="thief", dockerfile=attack))
    assert not Job.objects.filter(user=student).exists()


def test_a_multi_stage_dockerfile_may_copy_from_its_own_stages(student, host, fake_runtime):
    dockerfile = (
        "FROM aivc-test/busybox:latest AS build\nRUN echo built > /out\n"
        "FROM aivc-test/busybox:latest\nCOPY --from=build /out /out\nCOPY --from=0 /out /again\n"
    )
    job = upload(student, host, dopq_zip(name="stages", dockerfile=dockerfile))
    assert job.build.status == JobBuild.Status.BUILDING


def test_a_dockerfile_may_start_from_the_users_own_built_image(student, host, fake_runtime):
    mine = upload(student, host)
    later = upload(student, host, dopq_zip(name="second", dockerfile=f"FROM {mine.image.reference}\n"))
    assert later.build.status == JobBuild.Status.BUILDING


# The build fence (issue 21, H2), on the fake runtime.


def test_each_build_runs_fenced_without_network_with_the_jobs_memory_and_the_cpu_limit(
    student, host, fake_runtime, settings
):
    settings.JOB_BUILD_CPUS = 1.5
    job = upload(student, host)
    build_job_image(job.pk, now=NOW)
    (fence,) = FakeRuntime.engine_for(host).build_fences
    assert (fence.network, fence.proxy) == ("none", "")
    assert (fence.nano_cpus, fence.memory_bytes) == (1_500_000_000, 2**30)
    assert fence.timeout_s == settings.JOB_BUILD_TIMEOUT_S
    params = fence.build_params()
    assert (params["networkmode"], params["cpuquota"], params["cpuperiod"]) == ("none", 150_000, 100_000)
    assert "buildargs" not in params and "cgroupparent" not in params


def test_a_lab_proxy_reaches_the_build_as_the_predefined_proxy_arguments(
    student, host, fake_runtime, settings
):
    settings.JOB_BUILD_NETWORK, settings.JOB_BUILD_PROXY = "bridge", "http://proxy.lab:3128"
    build_job_image(upload(student, host).pk, now=NOW)
    params = FakeRuntime.engine_for(host).build_fences[0].build_params()
    assert params["networkmode"] == "bridge"
    assert json.loads(params["buildargs"])["https_proxy"] == "http://proxy.lab:3128"


def test_a_build_without_its_pids_fence_fails_with_a_clear_message(student, host, fake_runtime, settings):
    settings.JOB_BUILD_PIDS_LIMIT = 256
    settings.JOB_BUILD_CGROUP_PARENT = "aivc-build.slice"  # a slice: the install makes it, not the agent
    job = upload(student, host)
    assert "build fence is not installed" in build_job_image(job.pk, now=NOW)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "pids limit" in job.status_message
    assert FakeRuntime.engine_for(host).builds == []


def test_a_cgroupfs_parent_on_an_engine_with_the_systemd_driver_is_refused_saying_what_to_set(
    student, host, fake_runtime, settings
):
    settings.JOB_BUILD_PIDS_LIMIT, settings.JOB_BUILD_CGROUP_PARENT = 256, "aivc-build"
    FakeRuntime.engine_for(host).cgroup_driver = "systemd"
    job = upload(student, host)
    assert "set JOB_BUILD_CGROUP_PARENT to a slice" in build_job_image(job.pk, now=NOW)
    assert FakeRuntime.engine_for(host).builds == []


def test_a_build_is_refused_with_a_clear_message_when_the_engines_disk_is_short(
    student, host, fake_runtime, settings
):
    settings.JOB_BUILD_MIN_FREE_GB = 20
    FakeRuntime.engine_for(host).free_bytes = 5 * 2**30
    job = upload(student, host)
    assert build_job_image(job.pk, now=NOW).startswith("build failed")
    job.refresh_from_db()
    assert "gpu-01 has 5.0 GB free for images and a build needs at least 20 GB" in job.status_message
    assert FakeRuntime.engine_for(host).builds == []


def test_built_images_unused_past_the_keep_days_are_removed_and_no_others(
    student, host, fake_runtime, settings
):
    settings.JOB_BUILD_IMAGE_KEEP_DAYS = 14
    old, recent = upload(student, host), upload(student, host, dopq_zip(name="recent"))
    for job in (old, recent):
        build_job_image(job.pk, now=NOW)
    Job.objects.filter(pk=old.pk).update(status=Job.Status.SUCCEEDED, finished_at=NOW + timedelta(hours=1))
    Job.objects.filter(pk=recent.pk).update(status=Job.Status.SUCCEEDED, finished_at=NOW + timedelta(days=10))
    engine = FakeRuntime.engine_for(host)
    foreign = BuiltImage(
        id="sha256:" + "f" * 64, tags=("lab/other:1",), created="", labels={"aivc.built": "x"}
    )
    engine.built[foreign.id] = foreign  # another portal's (or nobody's) image: never touched
    removed = built_images_prune(runtime=get_runtime(host), host=host, now=NOW + timedelta(days=15))
    assert removed == [old.image.reference]
    assert {image.tags[0] for image in engine.built.values()} == {recent.image.reference, "lab/other:1"}
    assert ContainerEvent.objects.filter(message__contains="Removed 1 built image").exists()


def test_when_the_disk_is_low_idle_built_images_go_least_recently_used_first_but_not_a_waiting_jobs(
    student, host, fake_runtime, settings
):
    settings.JOB_BUILD_MIN_FREE_GB = 20
    first, second, waiting = (upload(student, host, dopq_zip(name=n)) for n in ("first", "second", "third"))
    for job in (first, second, waiting):
        build_job_image(job.pk, now=NOW)
    Job.objects.filter(pk=first.pk).update(status=Job.Status.SUCCEEDED, finished_at=NOW)
    Job.objects.filter(pk=second.pk).update(status=Job.Status.SUCCEEDED, finished_at=NOW + timedelta(hours=1))
    engine = FakeRuntime.engine_for(host)
    engine.free_bytes = 10 * 2**30
    original_remove = FakeRuntime.remove_image

    def remove_and_free(self, image_id):  # each removal frees 6 GB
        engine.free_bytes += 6 * 2**30
        return original_remove(self, image_id)

    FakeRuntime.remove_image = remove_and_free
    try:
        removed = built_images_prune(runtime=get_runtime(host), host=host, now=NOW + timedelta(hours=2))
    finally:
        FakeRuntime.remove_image = original_remove
    assert removed == [first.image.reference, second.image.reference]
    assert [image.tags[0] for image in engine.built.values()] == [waiting.image.reference]


def test_the_pruning_task_runs_on_each_host_and_is_scheduled_hourly(student, host, fake_runtime):
    assert prune_built_images() == "removed 0 built image(s); 0 engine(s) did not answer"
    names = [spec["name"] for spec in host_local_schedules()]
    assert "prune built images" in names


def test_a_zip_bomb_is_refused_and_nothing_is_stored(student, host, settings):
    bomb = zip_bomb(99 * 2**20)
    with pytest.raises(ValidationError, match="times its size"):
        upload(student, host, bomb)
    assert list((settings.JOB_BUILD_CONTEXT_ROOT).glob("*")) == []
    assert not Job.objects.exists()


def test_a_refused_dockerfile_leaves_no_stored_context(student, host, settings):
    with pytest.raises(ValidationError, match="by its id"):
        upload(student, host, dopq_zip(dockerfile="FROM 9b764e\n"))
    assert list((settings.JOB_BUILD_CONTEXT_ROOT).glob("*")) == []


def test_a_users_waiting_contexts_are_capped(student, host, fake_runtime, settings):
    first = upload(student, host)
    settings.JOB_BUILD_CONTEXT_MAX_BYTES_PER_USER = first.build.context_size + 100
    with pytest.raises(ValidationError, match="would hold more than"):
        upload(student, host, dopq_zip(name="second"))
    upload(UserFactory(username="m11007s06"), host)  # another user's cap is their own
    build_job_image(first.pk, now=NOW)
    upload(student, host, dopq_zip(name="second"))  # built: its context no longer counts


def test_the_contexts_of_cancelled_jobs_are_swept_and_waiting_ones_kept(
    student, host, fake_runtime, settings
):
    kept, cancelled = upload(student, host), upload(student, host, dopq_zip(name="second"))
    job_cancel(job=cancelled, now=NOW)
    root = settings.JOB_BUILD_CONTEXT_ROOT
    orphan = root / f"{'0' * 32}.tar"  # a submit that died between the file and the row
    orphan.write_bytes(b"x")
    assert build_contexts_sweep() == 1  # the cancelled job's; the orphan may be a submit being written
    assert JobBuild.objects.get(job=cancelled).context_file == ""
    os.utime(orphan, (0, 0))
    assert build_contexts_sweep() == 1
    assert [path.name for path in root.glob("*.tar")] == [kept.build.context_file]


def test_a_context_missing_on_the_build_host_fails_the_build_saying_so(student, host, fake_runtime):
    job = upload(student, host)
    context_path(job.build.context_file).unlink()
    assert "not on this server" in build_job_image(job.pk, now=NOW)
