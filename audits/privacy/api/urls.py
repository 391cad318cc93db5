from django.urls import path

from audits.privacy.api import views

urlpatterns = [
    path("requests/", views.RequestListView.as_view(), name="api-privacy-requests"),
    path("projects/<slug:slug>/requests/", views.RequestReceiveView.as_view(), name="api-privacy-receive"),
    path("projects/<slug:slug>/request-log", views.RequestLogView.as_view(), name="api-privacy-request-log"),
    path("projects/<slug:slug>/legal-holds/", views.LegalHoldPlaceView.as_view(), name="api-privacy-hold-place"),
    path("requests/<int:pk>", views.RequestDetailView.as_view(), name="api-privacy-request"),
    path("requests/<int:pk>/confirm-receipt", views.ConfirmReceiptView.as_view(), name="api-privacy-confirm"),
    path("requests/<int:pk>/verify-identity", views.VerifyIdentityView.as_view(), name="api-privacy-verify"),
    path("requests/<int:pk>/search", views.SearchView.as_view(), name="api-privacy-search"),
    path("requests/<int:pk>/access-package", views.AccessPackageView.as_view(), name="api-privacy-package"),
    path("requests/<int:pk>/extend", views.ExtendView.as_view(), name="api-privacy-extend"),
    path("requests/<int:pk>/deny", views.DenyView.as_view(), name="api-privacy-deny"),
    path("requests/<int:pk>/withdraw", views.WithdrawView.as_view(), name="api-privacy-withdraw"),
    path("requests/<int:pk>/erase", views.EraseView.as_view(), name="api-privacy-erase"),
    path("requests/<int:pk>/complete", views.CompleteView.as_view(), name="api-privacy-complete"),
    path("legal-holds/", views.LegalHoldListView.as_view(), name="api-privacy-holds"),
    path("legal-holds/<int:pk>/release", views.LegalHoldReleaseView.as_view(), name="api-privacy-hold-release"),
    path("model-reviews/", views.ModelReviewListView.as_view(), name="api-privacy-reviews"),
    path("model-reviews/<int:pk>/close", views.ModelReviewCloseView.as_view(), name="api-privacy-review-close"),
]
