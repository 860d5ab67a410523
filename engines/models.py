"""Deployment targets (environments) and, with the Engines issue, resource state and deployments."""

from __future__ import annotations

from django.db import models

from aicdn_project.models import TimeStampedModel


class EnvironmentKind(models.TextChoices):
    DEVELOPMENT = "development", "Development"
    TEST = "test", "Test"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"


class Environment(TimeStampedModel):
    """A deployment target: an engine kind with its config; secrets are referenced by env var name, never stored."""

    name = models.SlugField(max_length=63, unique=True)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=EnvironmentKind.choices, default=EnvironmentKind.DEVELOPMENT)
    # Validated against the engine registry by the service that writes it (a new engine needs no migration).
    engine = models.CharField(max_length=32, default="simulator")
    config = models.JSONField(default=dict, blank=True)
    # {"token": "PROXMOX_TOKEN"}: the engine reads os.environ[...] at run time; the value never reaches the DB.
    secret_refs = models.JSONField(default=dict, blank=True)
    deployed_version = models.ForeignKey(
        "blueprints.BlueprintVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
