"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in every app."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aicdn_project.settings")

app = Celery("aicdn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
