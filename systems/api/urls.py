from django.urls import path

from systems.api import views

urlpatterns = [
    path("projects/<slug:slug>/ai-systems/", views.ProjectAISystemsView.as_view(), name="api-ai-systems"),
    path("ai-systems/questionnaire", views.QuestionnaireView.as_view(), name="api-ai-systems-questionnaire"),
    path("ai-systems/<int:pk>", views.AISystemDetailView.as_view(), name="api-ai-system"),
    path("ai-systems/<int:pk>/update", views.AISystemUpdateView.as_view(), name="api-ai-system-update"),
    path(
        "ai-systems/<int:pk>/classifications/",
        views.AISystemClassificationsView.as_view(),
        name="api-ai-system-classifications",
    ),
    path(
        "ai-system-classifications/<int:pk>/submit",
        views.ClassificationSubmitView.as_view(),
        name="api-ai-system-classification-submit",
    ),
]
