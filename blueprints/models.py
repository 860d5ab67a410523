"""Blueprints and their immutable, content-addressed versions."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from aicdn_project.models import TimeStampedModel


class Blueprint(TimeStampedModel):
    """A named line of blueprint versions owned by one user; `head` is the current version."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="blueprints")
    name = models.CharField(max_length=63)
    description = models.TextField(blank=True, default="")
    head = models.ForeignKey("BlueprintVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="blueprint_unique_name_per_owner")]

    def __str__(self) -> str:
        return self.name


class ImmutableRowError(RuntimeError):
    """Raised when code tries to change or delete a row that is append-only by design."""


class BlueprintVersion(models.Model):
    """One immutable version: its identity is the sha256 of its canonical JSON; the commit id is its first 12 hex."""

    blueprint = models.ForeignKey(Blueprint, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    commit_id = models.CharField(max_length=12, db_index=True)
    source_text = models.TextField()
    canonical_json = models.TextField()
    document = models.JSONField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    message = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["blueprint_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["blueprint", "sha256"], name="version_unique_content_per_blueprint"),
            models.UniqueConstraint(fields=["blueprint", "number"], name="version_unique_number_per_blueprint"),
        ]

    def __str__(self) -> str:
        return f"{self.blueprint.name}@{self.commit_id}"

    # Integrity guard, not a domain rule: a version is content-addressed, so it can never change or vanish alone.
    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if self.pk is not None and not self._state.adding:
            raise ImmutableRowError("blueprint versions are immutable")
        super().save(*args, **kwargs)


class PriceBook(TimeStampedModel):
    """A price book edited in the admin; the active one overrides the settings file and the shipped YAML."""

    name = models.CharField(max_length=100)
    data = models.JSONField(help_text="Same structure as blueprints/analysis/pricebook.yaml (version, sheets, ...).")
    is_active = models.BooleanField(default=False)
    notes = models.TextField(blank=True, default="")
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-is_active", "-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="pricebook_single_active"
            )
        ]

    def __str__(self) -> str:
        version = self.data.get("version", "?") if isinstance(self.data, dict) else "?"
        return f"{self.name} ({version}){' [active]' if self.is_active else ''}"


class SecuritySuppression(models.Model):
    """An accepted security finding on one blueprint: a rule, optionally one resource or path, and why."""

    blueprint = models.ForeignKey(Blueprint, on_delete=models.CASCADE, related_name="security_suppressions")
    rule_id = models.CharField(max_length=16)
    resource = models.CharField(max_length=63, blank=True, default="")
    path = models.CharField(max_length=255, blank=True, default="")
    justification = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["blueprint_id", "rule_id", "resource", "path"]
        constraints = [
            models.UniqueConstraint(
                fields=["blueprint", "rule_id", "resource", "path"], name="suppression_unique_per_scope"
            ),
            models.CheckConstraint(condition=~models.Q(justification=""), name="suppression_justification_required"),
        ]

    def __str__(self) -> str:
        scope = self.path or self.resource or "all resources"
        return f"{self.rule_id} on {self.blueprint_id} ({scope})"
