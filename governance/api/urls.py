from django.urls import path

from governance.api.views import (
    ApprovalApproveView,
    ApprovalDetailView,
    ApprovalListView,
    ApprovalRejectView,
    ApprovalWithdrawView,
    MeView,
    ProjectDetailView,
    ProjectListView,
)

urlpatterns = [
    path("me", MeView.as_view(), name="api-me"),
    path("projects/", ProjectListView.as_view(), name="api-project-list"),
    path("projects/<slug:slug>", ProjectDetailView.as_view(), name="api-project-detail"),
    path("approvals/", ApprovalListView.as_view(), name="api-approvals"),
    path("approvals/<int:pk>", ApprovalDetailView.as_view(), name="api-approval"),
    path("approvals/<int:pk>/approve", ApprovalApproveView.as_view(), name="api-approval-approve"),
    path("approvals/<int:pk>/reject", ApprovalRejectView.as_view(), name="api-approval-reject"),
    path("approvals/<int:pk>/withdraw", ApprovalWithdrawView.as_view(), name="api-approval-withdraw"),
]
