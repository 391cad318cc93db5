"""A real OpenID Connect provider for the single sign-on tests, started on loopback.

A separate Django project (its own settings, a SQLite file in a temporary folder) running
django-oauth-toolkit with OpenID Connect on: an RSA key made at each start, one confidential
client whose redirect URI the test gives, and the users the test lists, each with the ``amr``
values its ID tokens carry. It has a login form and a consent page, as a real provider does.

``start_provider`` runs it as a child process (``python -m tests.oidc_provider CONFIG``) on a
port the child's server picks itself (127.0.0.1, port 0), so two runs never race for a port; it
returns once the child prints its issuer URL. The service never imports this package: only the
tests start it, and this module imports nothing of Django's.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
START_TIMEOUT_S = 120


@dataclass
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_provider(
    folder: Path, *, redirect_uri: str, users: list[dict[str, Any]], client_id: str, client_secret: str
) -> Provider:
    """Start the provider with its database and configuration in ``folder``. ``users``: dicts
    with ``username``, ``password``, and optionally ``email``, ``amr`` (a list; ``["pwd"]`` by
    default), ``acr`` and ``claims`` (more claims, overriding the others)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.json"
    config.write_text(
        json.dumps({"client": {"id": client_id, "secret": client_secret, "redirect_uri": redirect_uri}, "users": users})
    )
    # The service's settings and variables stay out of the provider's process.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OIDC_", "GOV_", "DATABASE_URL"))}
    env["DJANGO_SETTINGS_MODULE"] = "tests.oidc_provider.settings"
    log = folder / "provider.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.oidc_provider", str(config)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                process.kill()
                process.wait()
                raise RuntimeError(f"the test OIDC provider did not start:\n{log.read_text()[-4000:]}")
            if selector.select(timeout=min(left, 1.0)):
                line = process.stdout.readline().decode().strip()
                if line.startswith("ready "):
                    return Provider(line.split(" ", 1)[1], client_id, client_secret, process, log)
