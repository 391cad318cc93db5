from django.urls import path

from governance.api.views import SubjectSubmitView
from registry.api import views

urlpatterns = [
    path("projects/<slug:slug>/datasets/", views.ProjectDatasetsView.as_view(), name="api-datasets"),
    path("projects/<slug:slug>/data-subjects/lookup", views.SubjectLookupView.as_view(), name="api-subject-lookup"),
    path("datasets/<int:pk>", views.DatasetDetailView.as_view(), name="api-dataset"),
    path("datasets/<int:pk>/versions/", views.DatasetVersionsView.as_view(), name="api-dataset-versions"),
    path(
        "datasets/<int:pk>/versions/register-path",
        views.DatasetVersionRegisterPathView.as_view(),
        name="api-dataset-version-register-path",
    ),
    path("dataset-versions/<int:pk>", views.DatasetVersionDetailView.as_view(), name="api-dataset-version"),
    path(
        "dataset-versions/<int:pk>/review", views.DatasetVersionReviewView.as_view(), name="api-dataset-version-review"
    ),
    path("dataset-versions/<int:pk>/scan", views.DatasetVersionScanView.as_view(), name="api-dataset-version-scan"),
    path(
        "dataset-versions/<int:pk>/lineage",
        views.DatasetVersionLineageView.as_view(),
        name="api-dataset-version-lineage",
    ),
    path(
        "dataset-versions/<int:pk>/deduplicate",
        views.DatasetVersionDeduplicateView.as_view(),
        name="api-dataset-version-deduplicate",
    ),
    path(
        "dataset-versions/<int:pk>/anonymise",
        views.DatasetVersionAnonymiseView.as_view(),
        name="api-dataset-version-anonymise",
    ),
    # The governed-subject submit action (governance's generic view, bound to this subject type).
    path(
        "dataset-versions/<int:pk>/submit",
        SubjectSubmitView.as_view(subject_type="dataset_version"),
        name="api-dataset-version-submit",
    ),
    path("projects/<slug:slug>/models/", views.ProjectModelsView.as_view(), name="api-models"),
    path("models/<int:pk>/versions/", views.ModelVersionsView.as_view(), name="api-model-versions"),
    path("model-versions/<int:pk>/lineage", views.ModelVersionLineageView.as_view(), name="api-model-version-lineage"),
    path(
        "projects/<slug:slug>/prompt-templates/",
        views.ProjectPromptTemplatesView.as_view(),
        name="api-prompt-templates",
    ),
]
