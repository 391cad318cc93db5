"""``GET /api/v1/inventory?at=TIME``."""

urlpatterns: list = []
