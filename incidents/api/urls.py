from django.urls import path

from incidents.api import views

urlpatterns = [
    path("incidents/", views.IncidentListView.as_view(), name="api-incidents"),
    path("projects/<slug:slug>/incidents/", views.IncidentRegisterView.as_view(), name="api-incidents-register"),
    path("incidents/<int:pk>", views.IncidentDetailView.as_view(), name="api-incident"),
    path("incidents/<int:pk>/link", views.IncidentLinkView.as_view(), name="api-incident-link"),
    path("incidents/<int:pk>/classify", views.IncidentClassifyView.as_view(), name="api-incident-classify"),
    path("incidents/<int:pk>/report", views.IncidentReportView.as_view(), name="api-incident-report"),
    path("incidents/<int:pk>/close", views.IncidentCloseView.as_view(), name="api-incident-close"),
]
