from django.urls import path

from audits.checks.api import views
from governance.api.views import SubjectSubmitView

urlpatterns = [
    path("model-versions/<int:pk>/security-scans/", views.ModelVersionScansView.as_view(), name="api-security-scans"),
    path(
        "model-versions/<int:pk>/bias-evaluations/",
        views.ModelVersionEvaluationsView.as_view(),
        name="api-bias-evaluations",
    ),
    path(
        "model-versions/<int:pk>/submit",
        SubjectSubmitView.as_view(subject_type="model_version"),
        name="api-model-version-submit",
    ),
    path("security-scans/<int:pk>", views.ScanDetailView.as_view(), name="api-security-scan"),
    path(
        "security-scans/<int:pk>/submit",
        SubjectSubmitView.as_view(subject_type="security_scan"),
        name="api-security-scan-submit",
    ),
    path("security-scans/<int:pk>/cancel", views.ScanCancelView.as_view(), name="api-security-scan-cancel"),
    path("bias-evaluations/<int:pk>", views.EvaluationDetailView.as_view(), name="api-bias-evaluation"),
    path("bias-evaluations/<int:pk>/cancel", views.EvaluationCancelView.as_view(), name="api-bias-evaluation-cancel"),
    path("bias-evaluations/<int:pk>/chart", views.EvaluationChartView.as_view(), name="api-bias-evaluation-chart"),
    path(
        "bias-evaluations/<int:pk>/submit",
        SubjectSubmitView.as_view(subject_type="bias_evaluation"),
        name="api-bias-evaluation-submit",
    ),
]
