"""Websocket routes of the conversations app."""

from django.urls import re_path

from conversations.consumers import ChatConsumer

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<conversation_id>[0-9a-fA-F-]{1,64})/$", ChatConsumer.as_asgi()),
]
