"""A URL conf for governance/tests/test_pii_lists.py: the PII lists' API and admin pages mounted as
config/urls.py will mount them (``api/v1/``, ``admin/``), on an admin site of their own, so the
tests need not register the page on the shared site that every other test's pages read."""

from django.urls import include, path

from governance.admin.pii_lists import PiiListEntryAdmin
from governance.mfa import MfaAdminSite
from governance.models import PiiListEntry

site = MfaAdminSite(name="admin")
site.register(PiiListEntry, PiiListEntryAdmin)

urlpatterns = [
    path("api/v1/", include("governance.api.pii_lists")),
    path("admin/", site.urls),
]
