from django.urls import path

from blueprints.api import analysis_views as views

urlpatterns = [
    path("templates", views.TemplateListView.as_view(), name="template-list"),
    path("templates/<str:template_id>", views.TemplateDetailView.as_view(), name="template-detail"),
    path("templates/<str:template_id>/customize", views.TemplateCustomizeView.as_view(), name="template-customize"),
    path("blueprints/versions/<str:ref>/cost", views.VersionCostView.as_view(), name="version-cost"),
    path("blueprints/versions/<str:ref>/security", views.VersionSecurityView.as_view(), name="version-security"),
    path("blueprints/versions/<str:ref>/plan", views.VersionPlanView.as_view(), name="version-plan"),
    path("blueprints/versions/<str:ref>/topology.svg", views.VersionTopologyView.as_view(), name="version-topology"),
    path("blueprints/cost-delta", views.CostDeltaView.as_view(), name="cost-delta"),
    path("blueprints/optimize-costs", views.OptimizeCostsView.as_view(), name="optimize-costs"),
    path("blueprints/security-audit", views.SecurityAuditView.as_view(), name="security-audit"),
    path("blueprints/security-rules", views.SecurityRulesView.as_view(), name="security-rules"),
    path("blueprints/<int:pk>/optimize", views.BlueprintOptimizeView.as_view(), name="blueprint-optimize"),
    path("blueprints/<int:pk>/suppressions", views.SuppressionListCreateView.as_view(), name="blueprint-suppressions"),
]
