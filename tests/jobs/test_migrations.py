"""Build contexts left the database: a waiting build's bytea becomes a file in
JOB_BUILD_CONTEXT_ROOT, and the row keeps the file's name and size."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("jobs", "0003_job_wait_reason")]


@pytest.mark.django_db(transaction=True)
def test_a_waiting_builds_context_moves_from_the_database_to_a_file(settings, tmp_path):
    settings.JOB_BUILD_CONTEXT_ROOT = tmp_path / "contexts"
    executor = MigrationExecutor(connection)
    old = executor.migrate(BEFORE).apps
    user = old.get_model("accounts", "User").objects.create(username="m11007s05")
    image = old.get_model("containers", "Image").objects.create(reference="aivc-build/m11007s05/mnist:1")
    make_job = old.get_model("jobs", "Job").objects.create
    jobs = [
        make_job(
            user=user,
            image=image,
            command="",
            cpus=1,
            memory_gb=1,
            time_limit_minutes=5,
            submitted_at=timezone.now(),
        )
        for _ in range(2)
    ]
    builds = old.get_model("jobs", "JobBuild").objects
    builds.create(job=jobs[0], name="mnist", executor_name="e", context=b"a tar's bytes", context_digest="d")
    builds.create(
        job=jobs[1], name="done", executor_name="e", context=b"", context_digest="d", status="built"
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from jobs.build_contexts import context_path
    from jobs.models import JobBuild

    waiting = JobBuild.objects.get(name="mnist")
    assert waiting.context_size == 13
    path = context_path(waiting.context_file)
    assert path.read_bytes() == b"a tar's bytes" and path.stat().st_mode & 0o777 == 0o600
    assert JobBuild.objects.get(name="done").context_file == ""
