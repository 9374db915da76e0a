"""The database cache's table (settings.CACHES, the default when no CACHE_URL names Redis):
API throttle counts shared by every gunicorn worker. Made here rather than by a separate
`createcachetable`, so every `migrate` (make run, the tests, the install, an upgrade) has
it; made whichever cache is configured now, so switching to the database cache later needs
no extra step."""

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

from aivc_portal.env import DATABASE_CACHE_TABLE


def create_cache_table(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, DATABASE_CACHE_TABLE, False)


def drop_cache_table(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(DATABASE_CACHE_TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0009_capabilityprofile_home_space")]

    operations = [migrations.RunPython(create_cache_table, drop_cache_table, elidable=False)]
