from django.urls import path

from governance.api.pii_lists import urlpatterns as pii_list_urlpatterns
from governance.api.views import (
    ApiTokenListView,
    ApiTokenRevokeView,
    ApprovalApproveView,
    ApprovalBreakGlassView,
    ApprovalDetailView,
    ApprovalListView,
    ApprovalRejectView,
    ApprovalWithdrawView,
    BreakGlassReviewCloseView,
    BreakGlassReviewListView,
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
    path("approvals/<int:pk>/break-glass", ApprovalBreakGlassView.as_view(), name="api-approval-break-glass"),
    path("break-glass-reviews/", BreakGlassReviewListView.as_view(), name="api-break-glass-reviews"),
    path(
        "break-glass-reviews/<int:pk>/close", BreakGlassReviewCloseView.as_view(), name="api-break-glass-review-close"
    ),
    path("tokens/", ApiTokenListView.as_view(), name="api-tokens"),
    # A prefix is 12 hex digits; another slug names no token (404), anything else no endpoint (404).
    path("tokens/<slug:prefix>/revoke", ApiTokenRevokeView.as_view(), name="api-token-revoke"),
]
# A project's PII lists (allow and deny entries): governance/api/pii_lists.py.
urlpatterns += pii_list_urlpatterns
