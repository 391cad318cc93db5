from django.urls import path

from audits.reports.api import views

urlpatterns = [
    path("", views.ReportListView.as_view(), name="api-reports"),
    path("<int:pk>", views.ReportDetailView.as_view(), name="api-report"),
    path("<int:pk>/pdf", views.ReportPdfView.as_view(), name="api-report-pdf"),
]
