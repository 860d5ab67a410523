"""Blueprint API shapes (input parsing and output rendering only)."""

from __future__ import annotations

from rest_framework import serializers

from blueprints.models import Blueprint, BlueprintVersion


class BlueprintInputSerializer(serializers.Serializer):
    """A blueprint as text (YAML or JSON) in `source`, or as an object in `document`."""

    source = serializers.CharField(required=False, trim_whitespace=False, max_length=1024 * 1024 + 1)
    document = serializers.JSONField(required=False)
    message = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")

    def validate(self, attrs: dict) -> dict:
        if ("source" in attrs) == ("document" in attrs):
            raise serializers.ValidationError("give exactly one of `source` (YAML/JSON text) or `document` (object)")
        return attrs


class VersionSummarySerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", read_only=True)
    blueprint_name = serializers.CharField(source="blueprint.name", read_only=True)

    class Meta:
        model = BlueprintVersion
        fields = [
            "id",
            "blueprint",
            "blueprint_name",
            "number",
            "commit_id",
            "sha256",
            "parent",
            "author",
            "message",
            "created_at",
        ]


class VersionDetailSerializer(VersionSummarySerializer):
    class Meta(VersionSummarySerializer.Meta):
        fields = [*VersionSummarySerializer.Meta.fields, "document", "source_text"]


class BlueprintSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    head = VersionSummarySerializer(read_only=True)

    class Meta:
        model = Blueprint
        fields = ["id", "name", "description", "owner", "head", "created_at", "updated_at"]
