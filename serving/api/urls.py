from django.urls import path

from governance.api.views import SubjectSubmitView
from serving.api import views

urlpatterns = [
    path("projects/<slug:slug>/deployments/", views.ProjectDeploymentsView.as_view(), name="api-deployments"),
    path("deployments/<int:pk>", views.DeploymentDetailView.as_view(), name="api-deployment"),
    path("deployments/<int:pk>/promote", views.DeploymentPromoteView.as_view(), name="api-deployment-promote"),
    path("deployments/<int:pk>/rollback", views.DeploymentRollbackView.as_view(), name="api-deployment-rollback"),
    path("deployments/<int:pk>/retire", views.DeploymentRetireView.as_view(), name="api-deployment-retire"),
    path("deployments/<int:pk>/pause", views.DeploymentPauseView.as_view(), name="api-deployment-pause"),
    path("deployments/<int:pk>/resume", views.DeploymentResumeView.as_view(), name="api-deployment-resume"),
    path("deployment-alerts/", views.DeploymentAlertsView.as_view(), name="api-deployment-alerts"),
    path("deployment-alerts/<int:pk>", views.DeploymentAlertDetailView.as_view(), name="api-deployment-alert"),
    path(
        "deployment-alerts/<int:pk>/acknowledge",
        views.DeploymentAlertAcknowledgeView.as_view(),
        name="api-deployment-alert-acknowledge",
    ),
    path(
        "deployment-alerts/<int:pk>/resolve",
        views.DeploymentAlertResolveView.as_view(),
        name="api-deployment-alert-resolve",
    ),
    path("deployments/<int:pk>/feedback", views.DeploymentFeedbackView.as_view(), name="api-deployment-feedback"),
    path(
        "deployments/<int:pk>/export-feedback",
        views.DeploymentExportFeedbackView.as_view(),
        name="api-deployment-export-feedback",
    ),
    path("deployments/<int:pk>/manifests", views.DeploymentManifestsView.as_view(), name="api-deployment-manifests"),
    path("deployments/<int:pk>/monitoring", views.DeploymentMonitoringView.as_view(), name="api-deployment-monitoring"),
    path(
        "deployments/<int:pk>/client-credentials",
        views.DeploymentClientCredentialsView.as_view(),
        name="api-deployment-client-credentials",
    ),
    path(
        "client-credentials/<int:pk>/revoke",
        views.ClientCredentialRevokeView.as_view(),
        name="api-client-credential-revoke",
    ),
    path(
        "deployments/<int:pk>/submit",
        SubjectSubmitView.as_view(subject_type="deployment"),
        name="api-deployment-submit",
    ),
]
