"""Request bodies of the generation endpoint."""

from __future__ import annotations

from rest_framework import serializers

from llm.generation import MAX_DESCRIPTION_CHARS


class GenerateBlueprintInputSerializer(serializers.Serializer):
    description = serializers.CharField(max_length=MAX_DESCRIPTION_CHARS, trim_whitespace=True)
    # DRF's serializer metaclass moves declared fields out of the class body, so the field never shadows
    # Serializer.save at runtime; the stubs see a plain class attribute.
    save = serializers.BooleanField(default=False)  # type: ignore[assignment]
    current = serializers.JSONField(
        required=False, help_text="The current blueprint document, to change it with a follow-up instruction."
    )
    blueprint_id = serializers.IntegerField(
        required=False, min_value=1, help_text="Save the result as a new version of this blueprint."
    )

    def validate_current(self, value: object) -> object:
        if not isinstance(value, dict) or not isinstance(value.get("resources"), list):
            raise serializers.ValidationError("current must be a blueprint document with a resources list")
        return value


class GenerateBlueprintOutputSerializer(serializers.Serializer):
    document = serializers.JSONField()
    intent = serializers.JSONField()
    assumptions = serializers.ListField(child=serializers.CharField())
    model = serializers.CharField()
    timings = serializers.JSONField()
    valid = serializers.BooleanField()
    errors = serializers.JSONField()  # type: ignore[assignment]  # likewise Serializer.errors (see `save` above)
    version = serializers.JSONField(required=False)
