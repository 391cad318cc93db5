from django.urls import path

from audits.ledger.api import views

urlpatterns = [
    path("checkpoint", views.CheckpointView.as_view(), name="ledger-checkpoint"),
    path("keys", views.KeysView.as_view(), name="ledger-keys"),
    path("entries/", views.EntryListView.as_view(), name="ledger-entries"),
    path("entries/<int:index>", views.EntryDetailView.as_view(), name="ledger-entry"),
    path("entries/<int:index>/receipt", views.EntryReceiptView.as_view(), name="ledger-entry-receipt"),
    path("proofs/inclusion", views.InclusionProofView.as_view(), name="ledger-inclusion-proof"),
    path("proofs/consistency", views.ConsistencyProofView.as_view(), name="ledger-consistency-proof"),
]
