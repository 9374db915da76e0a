"""Telemetry moved out of `containers` into its own app without losing a row: a database
migrated before the move keeps its samples, idle flags, duplicate-use records and the
permissions given on them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE_THE_MOVE = [("containers", "0002_gpu_telemetry"), ("telemetry", None)]


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_move_keeps_its_telemetry_rows_and_permissions():
    executor = MigrationExecutor(connection)
    old = executor.migrate(BEFORE_THE_MOVE).apps
    host = old.get_model("containers", "Host").objects.create(name="gpu-old", cpus=8, ram_gb=32)
    gpu = old.get_model("containers", "Gpu").objects.create(host=host, index=0)
    for used in (100, 200, 300):
        old.get_model("containers", "GpuSample").objects.create(
            gpu=gpu, taken_at=timezone.now(), memory_used_mb=used
        )
    old.get_model("containers", "GpuDuplicateUse").objects.create(
        gpu=gpu, pid=4242, first_seen_at=timezone.now(), last_seen_at=timezone.now()
    )
    content_types = old.get_model("contenttypes", "ContentType").objects
    # A database from before the move has the models' content types under `containers` (the
    # test database got `telemetry` ones when it was made).
    content_types.filter(app_label="telemetry").delete()
    content_type = content_types.create(app_label="containers", model="gpusample")
    permission = old.get_model("auth", "Permission").objects.create(
        content_type=content_type, codename="view_gpusample", name="Can view GPU sample"
    )
    old.get_model("auth", "Group").objects.create(name="watchers").permissions.add(permission)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from django.contrib.auth.models import Group

    from containers.telemetry.models import GpuDuplicateUse, GpuSample

    assert sorted(GpuSample.objects.values_list("memory_used_mb", flat=True)) == [100, 200, 300]
    assert GpuDuplicateUse.objects.get().pid == 4242
    [kept] = Group.objects.get(name="watchers").permissions.all()
    assert (kept.content_type.app_label, kept.content_type.model) == ("telemetry", "gpusample")
