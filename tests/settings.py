"""Settings of the test run: the portal's own, read from an environment the shell cannot
steer (tests/environment.py). Processes the tests start inherit the pinned environment,
and the variables the tests give them on purpose (an agent's AIVC_HOST) stay theirs."""

import os
import secrets
from pathlib import Path

from tests.environment import drop_portal_settings

if os.environ.get("AIVC_TEST_ENVIRONMENT_PINNED") != "1":
    drop_portal_settings(Path(__file__).resolve().parent.parent)
    os.environ["AIVC_TEST_ENVIRONMENT_PINNED"] = "1"
    # No env file either (aivc_portal/envfile.py): a maintainer's /etc/aivc-portal/env must not
    # reach the processes the tests start; a test of the file names its own.
    os.environ["AIVC_ENV_FILE"] = ""
    # A real-looking key: without DEBUG the settings refuse short or placeholder keys.
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(50)
    # Pages render without a collectstatic first, here and in the servers tests start.
    os.environ["STATICFILES_STORAGE"] = "django.contrib.staticfiles.storage.StaticFilesStorage"

from aivc_portal.settings import *  # noqa: F403
