from django.urls import path

from conversations.api import views

urlpatterns = [
    path("conversations", views.ConversationListView.as_view(), name="conversation-list"),
    path("conversations/<str:conversation_id>", views.ConversationDetailView.as_view(), name="conversation-detail"),
    path("conversations/<str:conversation_id>/ipr", views.ConversationOpenIPRView.as_view(), name="conversation-ipr"),
    path("conversation/chat", views.chat, name="conversation-chat"),
    path("conversation/chat/stream", views.chat_stream, name="conversation-chat-stream"),
]
