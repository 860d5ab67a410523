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


class DeploymentStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_DEPLOYMENT_STATUSES = (DeploymentStatus.SUCCEEDED, DeploymentStatus.FAILED, DeploymentStatus.CANCELLED)


class Deployment(TimeStampedModel):
    """One run of an IPR's plan against an environment: the worker's lease on it, its attempts and its outcome."""

    # A plain id: engines never imports iprs (the IPR side owns the state machine and reads this by ipr_id).
    ipr_id = models.PositiveBigIntegerField(unique=True)
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="deployments")
    target_version = models.ForeignKey("blueprints.BlueprintVersion", on_delete=models.PROTECT, related_name="+")
    plan = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=DeploymentStatus.choices, default=DeploymentStatus.QUEUED, db_index=True
    )
    # The worker that runs it now; the claim is a conditional update, the lease runs out without heartbeats.
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=0)  # claims so far: 1 = first run, more = resumed after a crash
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "lease_expires_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=DeploymentStatus.values), name="deployment_status_valid"
            )
        ]

    def __str__(self) -> str:
        return f"deployment {self.pk} of IPR #{self.ipr_id} ({self.status})"


class OperationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class ResourceOperation(models.Model):
    """One plan action of a deployment (create / update / replace / delete / noop) and what came of it."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="operations")
    position = models.PositiveIntegerField()  # the plan's `order`
    resource = models.CharField(max_length=63)
    type = models.CharField(max_length=32)
    action = models.CharField(max_length=16)
    depends_on = models.JSONField(default=list, blank=True)
    # The target resource entry for create / update / replace; empty for delete.
    spec = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=OperationStatus.choices, default=OperationStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)  # engine calls made, over every run of the deployment
    output = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "resource"], name="uniq_operation_per_resource"),
            models.CheckConstraint(
                condition=models.Q(status__in=OperationStatus.values), name="operation_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.resource} ({self.status})"


class DriftStatus(models.TextChoices):
    CLEAN = "clean", "Clean"
    DRIFTED = "drifted", "Drifted"
    ERROR = "error", "Error"


class DriftReport(models.Model):
    """What one drift check found: recorded resources missing or changed, and labelled objects nobody records."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="drift_reports")
    status = models.CharField(max_length=16, choices=DriftStatus.choices)
    checked_at = models.DateTimeField(auto_now_add=True, db_index=True)
    duration_ms = models.FloatField(default=0)
    resources_checked = models.PositiveIntegerField(default=0)
    missing = models.JSONField(default=list, blank=True)  # [{"name", "type"}]
    # [{"name", "type", "reasons": [{"field", "recorded", "actual"}]}]
    changed = models.JSONField(default=list, blank=True)
    # [{"resource", "type", "kind", "object_id", "object_name"}]
    unmanaged = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    reconcile_ipr_id = models.PositiveBigIntegerField(null=True, blank=True)  # plain id, as Deployment.ipr_id

    class Meta:
        ordering = ["-checked_at", "-id"]

    def __str__(self) -> str:
        return f"drift of {self.environment_id} at {self.checked_at:%Y-%m-%d %H:%M} ({self.status})"

    @property
    def findings(self) -> int:
        return len(self.missing) + len(self.changed) + len(self.unmanaged)
