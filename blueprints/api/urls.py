from django.urls import path

from blueprints.api import views

urlpatterns = [
    path("blueprints", views.BlueprintListCreateView.as_view(), name="blueprint-list"),
    path("blueprints/schema", views.SchemaView.as_view(), name="blueprint-schema"),
    path("blueprints/validate", views.ValidateView.as_view(), name="blueprint-validate"),
    path("blueprints/diff", views.DiffView.as_view(), name="blueprint-diff"),
    path("blueprints/versions", views.VersionListView.as_view(), name="version-list"),
    path("blueprints/versions/<str:ref>", views.VersionDetailView.as_view(), name="version-detail"),
    path("blueprints/<int:pk>", views.BlueprintDetailView.as_view(), name="blueprint-detail"),
    path("blueprints/<int:pk>/versions", views.BlueprintVersionListCreateView.as_view(), name="blueprint-versions"),
    path("blueprints/<int:pk>/versions/<str:ref>", views.VersionDetailView.as_view(), name="blueprint-version"),
]
