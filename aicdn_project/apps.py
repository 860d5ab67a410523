"""Project-level app: management commands (demo users, embedded services) and the role groups migration."""

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "aicdn_project"
    label = "aicdn"
    verbose_name = "AI-CDN"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save
        from rest_framework.authtoken.models import Token

        from aicdn_project.tokenauth import on_auth_change

        # Any change to a token or a user ends every process's remembered tokens (aicdn_project.tokenauth).
        for model in (Token, get_user_model()):
            post_save.connect(on_auth_change, sender=model, dispatch_uid=f"aicdn-auth-epoch-save-{model.__name__}")
            post_delete.connect(on_auth_change, sender=model, dispatch_uid=f"aicdn-auth-epoch-delete-{model.__name__}")
