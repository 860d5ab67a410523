"""Project-level app: management commands (demo users, embedded services) and the role groups migration."""

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "aicdn_project"
    label = "aicdn"
    verbose_name = "AI-CDN"
