"""Infrastructure Pull Requests, their reviews and overrides, the per-environment approval policy and deploy lock."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from aicdn_project.models import TimeStampedModel


class IPRState(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    APPROVED = "approved", "Approved"
    QUEUED = "queued", "Queued"
    DEPLOYING = "deploying", "Deploying"
    DEPLOYED = "deployed", "Deployed"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    CLOSED = "closed", "Closed"
    SUPERSEDED = "superseded", "Superseded"


class IPRKind(models.TextChoices):
    NORMAL = "normal", "Normal"
    ROLLBACK = "rollback", "Rollback"
    RECONCILE = "reconcile", "Reconcile"


class IPROrigin(models.TextChoices):
    CHAT = "chat", "Chat"
    API = "api", "API"
    CLI = "cli", "CLI"


class ReviewDecision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REQUEST_CHANGES = "request_changes", "Request changes"
    REJECT = "reject", "Reject"


class IPR(TimeStampedModel):
    """A proposed change of one environment to one blueprint version, with the snapshots reviewers judged."""

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=IPRKind.choices, default=IPRKind.NORMAL)
    blueprint_version = models.ForeignKey("blueprints.BlueprintVersion", on_delete=models.PROTECT, related_name="+")
    environment = models.ForeignKey("engines.Environment", on_delete=models.PROTECT, related_name="iprs")
    # The environment's deployed version when the plan was computed; a different deployed version = diverged.
    base_version = models.ForeignKey(
        "blueprints.BlueprintVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    plan = models.JSONField(default=dict, blank=True)
    cost = models.JSONField(default=dict, blank=True)  # {"estimate": estimate_cost(...), "delta": cost_delta(...)}
    findings = models.JSONField(default=dict, blank=True)  # the security audit result
    planned_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=IPRState.choices, default=IPRState.DRAFT, db_index=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="iprs")
    origin = models.CharField(max_length=8, choices=IPROrigin.choices, default=IPROrigin.API)
    # A plain id: conversations sits to the left of iprs and must not be imported or referenced by FK.
    conversation_id = models.CharField(max_length=64, null=True, blank=True, db_index=True)
    ai_provenance = models.JSONField(null=True, blank=True)  # {"model", "intent", "tool_calls"} for chat-born IPRs
    emergency = models.BooleanField(default=False)
    queued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    opened_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    deploy_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True, default="")
    deployment_result = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "IPR"
        verbose_name_plural = "IPRs"
        indexes = [models.Index(fields=["environment", "state"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(state__in=IPRState.values), name="ipr_state_valid"),
            models.CheckConstraint(condition=models.Q(kind__in=IPRKind.values), name="ipr_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"IPR #{self.pk}: {self.title}"


class Review(models.Model):
    """One reviewer's decision on the IPR as it stood (version and base); it is stale once either moves."""

    ipr = models.ForeignKey(IPR, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ipr_reviews")
    decision = models.CharField(max_length=16, choices=ReviewDecision.choices)
    comment = models.TextField(blank=True, default="")
    version = models.ForeignKey("blueprints.BlueprintVersion", on_delete=models.PROTECT, related_name="+")
    base_version = models.ForeignKey(
        "blueprints.BlueprintVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Not a field: selectors.ipr_console marks each review for the review page (the policy's notion of current).
    stale: bool

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.reviewer} {self.decision} IPR #{self.ipr_id}"

    @property
    def is_stale(self) -> bool:
        return self.version_id != self.ipr.blueprint_version_id or self.base_version_id != self.ipr.base_version_id


class FindingOverride(models.Model):
    """An admin's recorded decision to let blocking findings through, valid for one version and base."""

    ipr = models.ForeignKey(IPR, on_delete=models.CASCADE, related_name="overrides")
    admin = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    justification = models.TextField()
    version = models.ForeignKey("blueprints.BlueprintVersion", on_delete=models.PROTECT, related_name="+")
    base_version = models.ForeignKey(
        "blueprints.BlueprintVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    findings = models.JSONField(default=list)  # the blocking findings the admin saw
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"override by {self.admin} on IPR #{self.ipr_id}"


class ApprovalPolicy(TimeStampedModel):
    """The review rules of one environment; an environment without a row gets the defaults of these fields."""

    environment = models.OneToOneField("engines.Environment", on_delete=models.CASCADE, related_name="approval_policy")
    required_approvals = models.PositiveSmallIntegerField(default=1)
    reviewer_group = models.CharField(max_length=150, default="reviewers")
    # One of blueprints.analysis.SEVERITIES, checked by the service that writes the policy.
    blocking_severity = models.CharField(max_length=16, default="high")
    # A monthly cost increase (USD) above this needs one approval more; null switches the rule off.
    cost_increase_threshold = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, default=Decimal("100.00")
    )
    emergency_rollback_allowed = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "approval policies"
        constraints = [
            models.CheckConstraint(condition=models.Q(required_approvals__gte=1), name="policy_at_least_one_approval")
        ]

    def __str__(self) -> str:
        return f"policy of {self.environment_id}"


class EnvironmentLock(models.Model):
    """Who may deploy to an environment right now; free when nobody holds it or the holder's lease expired."""

    environment = models.OneToOneField("engines.Environment", on_delete=models.CASCADE, related_name="deploy_lock")
    holder_ipr = models.ForeignKey(IPR, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    holder_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    holder_name = models.CharField(max_length=150, blank=True, default="")  # worker id or user name, for display
    acquired_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"deploy lock of {self.environment_id}"
