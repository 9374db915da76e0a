"""Build contexts leave the database: each waiting build's bytea is written to a file in
JOB_BUILD_CONTEXT_ROOT (0600) and the row keeps the file's name and size."""

import os
import uuid
from pathlib import Path

from django.conf import settings
from django.db import migrations, models


def contexts_to_files(apps, schema_editor):
    JobBuild = apps.get_model("jobs", "JobBuild")
    root = Path(settings.JOB_BUILD_CONTEXT_ROOT)
    for build in JobBuild.objects.exclude(context=b"").iterator():
        data = bytes(build.context or b"")
        if not data:
            continue
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.tar"
        descriptor = os.open(root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        JobBuild.objects.filter(pk=build.pk).update(context_file=name, context_size=len(data))


def files_to_contexts(apps, schema_editor):
    JobBuild = apps.get_model("jobs", "JobBuild")
    root = Path(settings.JOB_BUILD_CONTEXT_ROOT)
    for build in JobBuild.objects.exclude(context_file="").iterator():
        path = root / build.context_file
        if path.is_file():
            JobBuild.objects.filter(pk=build.pk).update(context=path.read_bytes())


class Migration(migrations.Migration):
    dependencies = [("jobs", "0003_job_wait_reason")]

    operations = [
        migrations.AddField(
            model_name="jobbuild",
            name="context_file",
            field=models.CharField(
                blank=True,
                help_text="The checked build context (a tar) in JOB_BUILD_CONTEXT_ROOT; removed once built.",
                max_length=100,
            ),
        ),
        migrations.AddField(
            model_name="jobbuild",
            name="context_size",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.RunPython(contexts_to_files, files_to_contexts),
        migrations.RemoveField(model_name="jobbuild", name="context"),
    ]
