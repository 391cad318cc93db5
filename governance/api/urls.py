from django.urls import path

from governance.api.views import MeView, ProjectDetailView, ProjectListView

urlpatterns = [
    path("me", MeView.as_view(), name="api-me"),
    path("projects/", ProjectListView.as_view(), name="api-project-list"),
    path("projects/<slug:slug>", ProjectDetailView.as_view(), name="api-project-detail"),
]
