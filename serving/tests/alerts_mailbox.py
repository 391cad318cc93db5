"""A mail backend for the monitoring tests' Celery worker: Django's file backend, writing to the
folder in ``ALERTS_TEST_MAIL_DIR`` (the settings name no file path), so the test reads what the
worker sent."""

from __future__ import annotations

import os
from typing import Any

from django.core.mail.backends.filebased import EmailBackend


class FolderBackend(EmailBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["file_path"] = os.environ["ALERTS_TEST_MAIL_DIR"]
        super().__init__(*args, **kwargs)
