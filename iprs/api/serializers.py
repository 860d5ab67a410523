"""IPR, environment and audit API shapes (input parsing and output rendering only)."""

from __future__ import annotations

from rest_framework import serializers

from aicdn_project.models import AuditEvent
from engines.models import Environment, EnvironmentKind
from iprs.models import IPR, ApprovalPolicy, EnvironmentLock, FindingOverride, IPRKind, IPROrigin, Review


class IPROpenSerializer(serializers.Serializer):
    blueprint_version = serializers.CharField(max_length=64, help_text="version id or commit id")
    environment = serializers.CharField(max_length=63, help_text="environment name")
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)
    kind = serializers.ChoiceField(choices=IPRKind.choices, default=IPRKind.NORMAL)
    origin = serializers.ChoiceField(choices=IPROrigin.choices, default=IPROrigin.API)
    conversation_id = serializers.CharField(required=False, allow_null=True, default=None, max_length=64)
    ai_provenance = serializers.JSONField(required=False, allow_null=True, default=None)
    emergency = serializers.BooleanField(default=False)
    draft = serializers.BooleanField(default=False)


class RollbackSerializer(serializers.Serializer):
    to = serializers.CharField(max_length=64, help_text="commit id (or version id) of a version deployed before")
    environment = serializers.CharField(max_length=63, help_text="environment name")
    emergency = serializers.BooleanField(default=False, help_text="one approval, where the policy allows it")
    title = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)
    origin = serializers.ChoiceField(choices=IPROrigin.choices, default=IPROrigin.API)


class ReconcileSerializer(serializers.Serializer):
    title = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    origin = serializers.ChoiceField(choices=IPROrigin.choices, default=IPROrigin.API)


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=10000)


class JustificationSerializer(serializers.Serializer):
    justification = serializers.CharField(max_length=10000)


class UpdateVersionSerializer(serializers.Serializer):
    blueprint_version = serializers.CharField(max_length=64, help_text="version id or commit id")


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username", read_only=True)
    version = serializers.CharField(source="version.commit_id", read_only=True)
    stale = serializers.SerializerMethodField()

    class Meta:
        model = Review
        fields = ["id", "reviewer", "decision", "comment", "version", "stale", "created_at"]

    def get_stale(self, obj: Review) -> bool:
        return obj.is_stale


class OverrideSerializer(serializers.ModelSerializer):
    admin = serializers.CharField(source="admin.username", read_only=True)

    class Meta:
        model = FindingOverride
        fields = ["id", "admin", "justification", "version", "findings", "created_at"]


class VersionRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    commit_id = serializers.CharField()
    number = serializers.IntegerField()
    blueprint = serializers.CharField(source="blueprint.name")


class IPRSummarySerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.name", read_only=True)
    author = serializers.CharField(source="author.username", read_only=True)
    blueprint_version = VersionRefSerializer(read_only=True)
    base_version = VersionRefSerializer(read_only=True, allow_null=True)
    plan_summary = serializers.SerializerMethodField()

    class Meta:
        model = IPR
        fields = [
            "id",
            "title",
            "kind",
            "state",
            "environment",
            "author",
            "origin",
            "emergency",
            "blueprint_version",
            "base_version",
            "plan_summary",
            "created_at",
            "updated_at",
        ]

    def get_plan_summary(self, obj: IPR) -> str:
        return (obj.plan or {}).get("summary", "")


class IPRDetailSerializer(IPRSummarySerializer):
    reviews = ReviewSerializer(many=True, read_only=True)
    overrides = OverrideSerializer(many=True, read_only=True)
    queued_by = serializers.CharField(source="queued_by.username", read_only=True, allow_null=True)
    deployment = serializers.SerializerMethodField(
        help_text='null until the IPR starts deploying; then {"id", "status", "attempt", "started_at", '
        '"finished_at", "error", "resources": [{"name", "type", "action", "status", "attempts", "error", '
        '"duration_ms"}]}'
    )

    class Meta(IPRSummarySerializer.Meta):
        fields = [
            *IPRSummarySerializer.Meta.fields,
            "description",
            "conversation_id",
            "ai_provenance",
            "plan",
            "cost",
            "findings",
            "planned_at",
            "reviews",
            "overrides",
            "queued_by",
            "opened_at",
            "approved_at",
            "queued_at",
            "deploy_started_at",
            "finished_at",
            "failure_reason",
            "deployment_result",
            "deployment",
        ]

    def get_deployment(self, obj: IPR) -> dict | None:
        from engines.selectors import deployment_progress

        return deployment_progress(ipr_id=obj.pk)


class PolicySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApprovalPolicy
        fields = [
            "required_approvals",
            "reviewer_group",
            "blocking_severity",
            "cost_increase_threshold",
            "emergency_rollback_allowed",
        ]


class PolicyInputSerializer(serializers.Serializer):
    required_approvals = serializers.IntegerField(required=False, min_value=1, max_value=20)
    reviewer_group = serializers.CharField(required=False, max_length=150)
    blocking_severity = serializers.CharField(required=False, max_length=16)
    cost_increase_threshold = serializers.DecimalField(
        required=False, allow_null=True, max_digits=12, decimal_places=2, min_value=0
    )
    emergency_rollback_allowed = serializers.BooleanField(required=False)


class LockSerializer(serializers.ModelSerializer):
    holder_ipr = serializers.IntegerField(source="holder_ipr_id", read_only=True)

    class Meta:
        model = EnvironmentLock
        fields = ["holder_ipr", "holder_name", "acquired_at", "heartbeat_at", "expires_at"]


class EnvironmentSerializer(serializers.ModelSerializer):
    deployed_version = VersionRefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Environment
        fields = ["id", "name", "description", "kind", "engine", "config", "secret_refs", "deployed_version"]


class EnvironmentInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    kind = serializers.ChoiceField(choices=EnvironmentKind.choices, required=False)
    engine = serializers.CharField(required=False, max_length=32)
    config = serializers.JSONField(required=False)
    secret_refs = serializers.JSONField(required=False)
    policy = PolicyInputSerializer(required=False)


class EnvironmentUpdateSerializer(EnvironmentInputSerializer):
    name = None  # type: ignore[assignment]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "occurred_at",
            "actor_name",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "request_id",
            "client_ip",
            "channel",
            "prev_hash",
            "hash",
        ]
