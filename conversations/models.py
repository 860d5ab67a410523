"""Conversations with the assistant and their messages (what was said, which tools ran, tokens and timings)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from aicdn_project.models import TimeStampedModel


class Conversation(TimeStampedModel):
    """One chat of one owner, pointing at the blueprint version it currently works on."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True, default="")
    blueprint = models.ForeignKey(
        "blueprints.Blueprint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    blueprint_version = models.ForeignKey(
        "blueprints.BlueprintVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or str(self.id)


class MessageRole(models.TextChoices):
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"


class MessageStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETE = "complete", "Complete"
    FAILED = "failed", "Failed"


class Message(models.Model):
    """One message; an assistant message is created "running" when its turn starts and completed when it ends."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.COMPLETE)
    tool_calls = models.JSONField(default=list, blank=True)  # [{tool, arguments, ok, summary, error, ...}]
    events = models.JSONField(default=list, blank=True)  # blueprint / ipr events of the turn, for reloads
    error = models.JSONField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(null=True, blank=True)
    tokens_out = models.PositiveIntegerField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True, default="")
    timings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=MessageRole.values), name="message_role_valid"),
            models.CheckConstraint(condition=models.Q(status__in=MessageStatus.values), name="message_status_valid"),
            # At most one turn runs per conversation: the second sender gets a clean "busy" refusal.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(status="running"),
                name="one_running_message_per_conversation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
