from django.urls import path

from governance.api.views import SubjectSubmitView
from training.api import views

urlpatterns = [
    path("projects/<slug:slug>/fine-tune-runs/", views.ProjectRunsView.as_view(), name="api-fine-tune-runs"),
    path("projects/<slug:slug>/gpu-quota", views.GpuQuotaView.as_view(), name="api-gpu-quota"),
    path("fine-tune-runs/<int:pk>", views.RunDetailView.as_view(), name="api-fine-tune-run"),
    path("fine-tune-runs/<int:pk>/start", views.RunStartView.as_view(), name="api-fine-tune-run-start"),
    path("fine-tune-runs/<int:pk>/cancel", views.RunCancelView.as_view(), name="api-fine-tune-run-cancel"),
    path(
        "fine-tune-runs/<int:pk>/submit",
        SubjectSubmitView.as_view(subject_type="fine_tune_run"),
        name="api-fine-tune-run-submit",
    ),
    path(
        "projects/<slug:slug>/optimisation-runs/",
        views.ProjectOptimisationRunsView.as_view(),
        name="api-optimisation-runs",
    ),
    path("optimisation-runs/<int:pk>", views.OptimisationRunDetailView.as_view(), name="api-optimisation-run"),
    path(
        "optimisation-runs/<int:pk>/start", views.OptimisationRunStartView.as_view(), name="api-optimisation-run-start"
    ),
    path(
        "optimisation-runs/<int:pk>/cancel",
        views.OptimisationRunCancelView.as_view(),
        name="api-optimisation-run-cancel",
    ),
    path(
        "optimisation-runs/<int:pk>/submit",
        SubjectSubmitView.as_view(subject_type="optimisation_run"),
        name="api-optimisation-run-submit",
    ),
]
