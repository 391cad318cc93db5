"""A missing or malformed setting stops start-up with one clear line naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, subprocess_env


def _run_check(
    tmp_path: Path, settings_module: str = "config.settings", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=subprocess_env(GOV_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE=settings_module, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": "mysql://root@localhost/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://user@host:port/db"}, "DATABASE_URL"),
        ({"DATABASE_URL_FILE": "/nonexistent/database-url"}, "DATABASE_URL_FILE"),
        ({"DJANGO_SECRET_KEY_FILE": "/nonexistent/secret"}, "DJANGO_SECRET_KEY_FILE"),
        ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG"),
        ({"SQLITE_BUSY_TIMEOUT": "twenty"}, "SQLITE_BUSY_TIMEOUT"),
        ({"CELERY_BROKER_URL": "carrier-pigeon://coop"}, "CELERY_BROKER_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_setting_stops_with_one_line(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    result = _run_check(tmp_path, **env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}: ")
    assert "Traceback" not in result.stderr + result.stdout


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x" * 60)
    secret.chmod(0)
    result = _run_check(tmp_path, DJANGO_SECRET_KEY_FILE=str(secret))
    if result.returncode == 0:  # root reads any file regardless of mode
        secret.unlink()
        secret.mkdir()  # a directory cannot be read as a file, whoever we are
        result = _run_check(tmp_path, DJANGO_SECRET_KEY_FILE=str(secret))
    assert result.returncode != 0
    assert result.stderr.strip().startswith("configuration error: DJANGO_SECRET_KEY_FILE: cannot read")
    assert "Traceback" not in result.stderr


def test_production_requires_an_explicit_secret_key(tmp_path: Path) -> None:
    result = _run_check(tmp_path, settings_module="config.settings.production")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "configuration error: DJANGO_SECRET_KEY: is required in production (or DJANGO_SECRET_KEY_FILE)"
    )


def test_embedded_default_needs_no_variable(tmp_path: Path) -> None:
    result = _run_check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    secret = tmp_path / "secret-key"
    assert secret.stat().st_mode & 0o077 == 0, "the generated secret key must be readable by its owner only"
