from django.urls import path

from llm.api import views

urlpatterns = [
    path("blueprints/generate-blueprint", views.GenerateBlueprintView.as_view(), name="generate-blueprint"),
]
