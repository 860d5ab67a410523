"""WSGI entry point (management tools only; the server is daphne on the ASGI app)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aicdn_project.settings")
application = get_wsgi_application()
