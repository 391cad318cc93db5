"""Heavy libraries stay out of the web process's start-up (they cost seconds each)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, subprocess_env

HEAVY = ["presidio_analyzer", "spacy", "torch", "transformers", "mlflow", "garak", "matplotlib"]

PROBE = f"""
import json, sys, django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns
import config.wsgi, config.celery
from django.test import Client
Client().get("/healthz")
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


def test_django_start_up_imports_no_heavy_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
