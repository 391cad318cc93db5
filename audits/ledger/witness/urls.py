"""The witness endpoint (C2SP tlog-witness): ``POST /witness/add-checkpoint``."""

urlpatterns: list = []
