#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aivc_portal.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    from aivc_portal.envfile import prepare_service_environment

    # A configuration problem (the env file, DATABASE_URL, a bad value) is one clear line
    # naming what to fix, not a traceback.
    try:
        prepare_service_environment()
        settings.INSTALLED_APPS  # noqa: B018 (loads the settings now)
    except ImproperlyConfigured as error:
        sys.exit(f"aivc-portal: {error}")
    execute_from_command_line(sys.argv)
