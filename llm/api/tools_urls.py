from django.urls import path

from llm.api import tools_views

urlpatterns = [
    path("tools", tools_views.ToolListView.as_view(), name="tool-list"),
    path("tools/execute", tools_views.ToolExecuteView.as_view(), name="tool-execute"),
]
