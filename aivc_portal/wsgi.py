import os

from django.core.wsgi import get_wsgi_application

from aivc_portal.envfile import prepare_service_environment

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aivc_portal.settings")
prepare_service_environment()
application = get_wsgi_application()
