from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client, override_settings


@pytest.mark.django_db
def test_healthz_ready(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "signing_key": True,
    }
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_healthz_reports_a_missing_signing_key(client: Client, tmp_path: Path) -> None:
    with override_settings(LEDGER_SIGNING_KEY_FILE=tmp_path / "absent.key"):
        response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["signing_key"]["ok"] is False
    assert checks["database"]["ok"] is True
    assert str(tmp_path) not in response.content.decode()  # no configuration leaks to anonymous callers


@pytest.mark.django_db
def test_healthz_reports_an_unreachable_broker(client: Client) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:9/0", CELERY_BROKER_CONNECTION_TIMEOUT=1):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False


def test_healthz_refuses_other_methods(client: Client) -> None:
    assert client.post("/healthz").status_code == 405
