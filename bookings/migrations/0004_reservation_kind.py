"""Reservations become bookings or batch jobs. Both hold capacity (the GPU exclusion
constraint is unchanged); only bookings are one per user at a time, so the user overlap
constraint is rebuilt to cover kind = 'booking' only."""

from django.db import migrations, models

LIVE = "('scheduled', 'starting', 'running', 'blocked')"
USER_OVERLAP = "EXCLUDE USING gist (user_id WITH =, tstzrange(start, \"end\", '[)') WITH &&) WHERE (status IN {live}{kind})"


def _rebuild(schema_editor, *, kind: str) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        "ALTER TABLE bookings_reservation DROP CONSTRAINT IF EXISTS reservation_user_no_overlap"
    )
    definition = USER_OVERLAP.format(live=LIVE, kind=kind)
    schema_editor.execute(
        f"ALTER TABLE bookings_reservation ADD CONSTRAINT reservation_user_no_overlap {definition}"
    )


def bookings_only(apps, schema_editor) -> None:
    _rebuild(schema_editor, kind=" AND kind = 'booking'")


def every_kind(apps, schema_editor) -> None:
    _rebuild(schema_editor, kind="")


class Migration(migrations.Migration):
    dependencies = [("bookings", "0003_exclusion_constraints")]

    operations = [
        migrations.AddField(
            model_name="reservation",
            name="kind",
            field=models.CharField(
                choices=[("booking", "Booking"), ("job", "Job")],
                default="booking",
                help_text="A booking (one per user at a time) or a batch job; both hold capacity.",
                max_length=8,
            ),
        ),
        migrations.RunPython(bookings_only, every_kind),
    ]
