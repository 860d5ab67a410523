from django.urls import path

from iprs.api import views

urlpatterns = [
    path("iprs", views.IPRListCreateView.as_view(), name="ipr-list"),
    path("iprs/rollback", views.IPRRollbackView.as_view(), name="ipr-rollback"),
    path("iprs/<int:pk>", views.IPRDetailView.as_view(), name="ipr-detail"),
    path("iprs/<int:pk>/submit", views.IPRSubmitView.as_view(), name="ipr-submit"),
    path("iprs/<int:pk>/approve", views.IPRApproveView.as_view(), name="ipr-approve"),
    path("iprs/<int:pk>/request-changes", views.IPRRequestChangesView.as_view(), name="ipr-request-changes"),
    path("iprs/<int:pk>/reject", views.IPRRejectView.as_view(), name="ipr-reject"),
    path("iprs/<int:pk>/deploy", views.IPRDeployView.as_view(), name="ipr-deploy"),
    path("iprs/<int:pk>/close", views.IPRCloseView.as_view(), name="ipr-close"),
    path("iprs/<int:pk>/replan", views.IPRReplanView.as_view(), name="ipr-replan"),
    path("iprs/<int:pk>/override", views.IPROverrideView.as_view(), name="ipr-override"),
    path("iprs/<int:pk>/abort", views.IPRAbortView.as_view(), name="ipr-abort"),
    path("iprs/<int:pk>/version", views.IPRUpdateVersionView.as_view(), name="ipr-update-version"),
    path("environments", views.EnvironmentListCreateView.as_view(), name="environment-list"),
    path("environments/<slug:name>", views.EnvironmentDetailView.as_view(), name="environment-detail"),
    path("environments/<slug:name>/plan", views.EnvironmentPlanView.as_view(), name="environment-plan"),
    path("environments/<slug:name>/lock", views.EnvironmentLockView.as_view(), name="environment-lock"),
    path(
        "environments/<slug:name>/drift/reconcile",
        views.EnvironmentReconcileView.as_view(),
        name="environment-drift-reconcile",
    ),
    path("audit", views.AuditListView.as_view(), name="audit-list"),
    path("audit/verify", views.AuditVerifyView.as_view(), name="audit-verify"),
]
