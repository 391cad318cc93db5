"""``GET /api/v1/inventory?at=TIME``."""

from django.urls import path

from audits.reports.inventory.api import InventoryView

urlpatterns = [path("inventory", InventoryView.as_view(), name="inventory")]
