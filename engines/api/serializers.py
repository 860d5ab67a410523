"""Deployment and drift API shapes (rendering only)."""

from __future__ import annotations

from rest_framework import serializers

from engines.drift import drift_summary
from engines.models import Deployment, DriftReport, ResourceOperation


class ResourceOperationSerializer(serializers.ModelSerializer):
    class Meta:
        model = ResourceOperation
        fields = [
            "resource",
            "type",
            "action",
            "position",
            "depends_on",
            "status",
            "attempts",
            "output",
            "error",
            "started_at",
            "finished_at",
            "duration_ms",
        ]


class DeploymentSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.name", read_only=True)
    target_version = serializers.CharField(source="target_version.commit_id", read_only=True)
    plan_summary = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = [
            "id",
            "ipr_id",
            "environment",
            "target_version",
            "plan_summary",
            "status",
            "attempt",
            "lease_owner",
            "lease_expires_at",
            "heartbeat_at",
            "started_at",
            "finished_at",
            "error",
            "result",
            "created_at",
        ]

    def get_plan_summary(self, obj: Deployment) -> str:
        summary: str = (obj.plan or {}).get("summary", "")
        return summary


class DeploymentDetailSerializer(DeploymentSerializer):
    operations = ResourceOperationSerializer(many=True, read_only=True)

    class Meta(DeploymentSerializer.Meta):
        fields = [*DeploymentSerializer.Meta.fields, "operations"]


class DriftReportSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.name", read_only=True)
    summary = serializers.SerializerMethodField()

    class Meta:
        model = DriftReport
        fields = [
            "id",
            "environment",
            "status",
            "summary",
            "checked_at",
            "duration_ms",
            "resources_checked",
            "missing",
            "changed",
            "unmanaged",
            "error",
            "reconcile_ipr_id",
        ]

    def get_summary(self, obj: DriftReport) -> str:
        return drift_summary(obj)
