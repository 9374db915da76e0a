"""A view of each reservation's GPU indices for the reservations CSV (PostgreSQL only:
string_agg ... ORDER BY). Read through the unmanaged model ReservationGpuIndices."""

from django.db import migrations, models

VIEW = """
CREATE VIEW bookings_reservation_gpu_indices AS
SELECT allocation.reservation_id,
       reservation.start,
       string_agg(gpu.index::text, ' ' ORDER BY gpu.index) AS indices
FROM bookings_gpuallocation AS allocation
JOIN containers_gpu AS gpu ON gpu.id = allocation.gpu_id
JOIN bookings_reservation AS reservation ON reservation.id = allocation.reservation_id
GROUP BY allocation.reservation_id, reservation.start
"""


def create_view(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(VIEW)


def drop_view(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP VIEW IF EXISTS bookings_reservation_gpu_indices")


class Migration(migrations.Migration):
    dependencies = [("bookings", "0006_field_labels"), ("containers", "0001_initial")]

    operations = [
        migrations.RunPython(create_view, drop_view),
        migrations.CreateModel(
            name="ReservationGpuIndices",
            fields=[
                (
                    "reservation",
                    models.OneToOneField(
                        db_column="reservation_id",
                        on_delete=models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="gpu_indices_row",
                        serialize=False,
                        to="bookings.reservation",
                    ),
                ),
                (
                    "start",
                    models.DateTimeField(
                        help_text="The reservation's start, so a report narrows the view to its range."
                    ),
                ),
                ("indices", models.TextField()),
            ],
            options={"db_table": "bookings_reservation_gpu_indices", "managed": False},
        ),
    ]
