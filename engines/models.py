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


class ResourceStatus(models.TextChoices):
    CREATING = "creating", "Creating"
    UPDATING = "updating", "Updating"
    DELETING = "deleting", "Deleting"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class ResourceState(TimeStampedModel):
    """The recorded deployed state of one blueprint resource in one environment (what the plan diffs against)."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="resource_states")
    name = models.SlugField(max_length=63)
    type = models.CharField(max_length=32)
    # The blueprint resource entry as deployed.
    spec = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=ResourceStatus.choices, default=ResourceStatus.CREATING)
    outputs = models.JSONField(default=dict, blank=True)
    engine_object_ids = models.JSONField(default=list, blank=True)
    deployment_id = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["environment_id", "name"]
        constraints = [models.UniqueConstraint(fields=["environment", "name"], name="uniq_resource_state_env_name")]

    def __str__(self) -> str:
        return f"{self.environment_id}/{self.name} ({self.status})"


class SimulatedObject(TimeStampedModel):
    """A virtual resource the simulator engine made; its labels are columns so lookups work on every database."""

    # Simulated "clusters" are independent: two environments pointing at different clusters share nothing.
    cluster = models.CharField(max_length=63, default="default")
    object_id = models.CharField(max_length=64, unique=True)
    environment = models.CharField(max_length=63)
    resource_name = models.CharField(max_length=63)
    instance = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=32)
    deployment_id = models.CharField(max_length=64, blank=True, default="")
    labels = models.JSONField(default=dict, blank=True)
    spec = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, default="running")
    outputs = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["cluster", "environment", "resource_name", "instance"]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "environment", "resource_name", "instance"], name="uniq_simulated_object_slot"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.environment}/{self.resource_name}#{self.instance}"
