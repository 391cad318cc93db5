"""The witness endpoint (C2SP tlog-witness): ``POST /witness/add-checkpoint``."""

from django.urls import path

from audits.ledger.witness.views import add_checkpoint

app_name = "witness"

urlpatterns = [path("add-checkpoint", add_checkpoint, name="add-checkpoint")]
