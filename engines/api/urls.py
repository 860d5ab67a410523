from django.urls import path

from engines.api import views

urlpatterns = [
    path("deployments", views.DeploymentListView.as_view(), name="deployment-list"),
    path("deployments/<int:pk>", views.DeploymentDetailView.as_view(), name="deployment-detail"),
    path("environments/<slug:name>/drift", views.DriftView.as_view(), name="environment-drift"),
    path("environments/<slug:name>/drift/check", views.DriftCheckView.as_view(), name="environment-drift-check"),
]
