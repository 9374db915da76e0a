"""On PostgreSQL the database itself refuses a GPU or a user booked twice at once.
SQLite has no exclusion constraints; there the booking service's checks, run under
BEGIN IMMEDIATE, are the guard."""

from django.contrib.postgres.operations import BtreeGistExtension
from django.db import migrations

LIVE = "('scheduled', 'starting', 'running', 'blocked')"

CONSTRAINTS = [
    (
        "bookings_gpuallocation",
        "allocation_gpu_no_overlap",
        "EXCLUDE USING gist (gpu_id WITH =, tstzrange(start, \"end\", '[)') WITH &&) WHERE (active)",
    ),
    (
        "bookings_reservation",
        "reservation_user_no_overlap",
        "EXCLUDE USING gist (user_id WITH =, tstzrange(start, \"end\", '[)') WITH &&) "
        f"WHERE (status IN {LIVE})",
    ),
]


def add_constraints(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, name, definition in CONSTRAINTS:
        schema_editor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")


def drop_constraints(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, name, _ in CONSTRAINTS:
        schema_editor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("bookings", "0002_initial")]

    operations = [
        BtreeGistExtension(),
        migrations.RunPython(add_constraints, drop_constraints),
    ]
