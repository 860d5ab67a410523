"""Conversation and message representations, and request bodies of the chat endpoints."""

from __future__ import annotations

from rest_framework import serializers

from conversations.models import Conversation, Message
from llm.agent import MAX_MESSAGE_CHARS


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = [
            "id",
            "role",
            "status",
            "content",
            "tool_calls",
            "events",
            "error",
            "tokens_in",
            "tokens_out",
            "model",
            "timings",
            "created_at",
            "finished_at",
        ]


class ConversationSerializer(serializers.ModelSerializer):
    blueprint_version = serializers.PrimaryKeyRelatedField(read_only=True)
    blueprint = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "title", "blueprint", "blueprint_version", "created_at", "updated_at"]


class ConversationCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class ChatInputSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=True)
    conversation_id = serializers.UUIDField(required=False, allow_null=True)


class OpenIPRSerializer(serializers.Serializer):
    environment = serializers.SlugField(max_length=63)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
