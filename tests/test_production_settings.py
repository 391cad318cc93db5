"""The production settings: Django's deployment check passes with no finding, and start-up stops
with a line naming the variable when the secret is missing or weak, DEBUG is on, or no host is set."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from conftest import manage_in, subprocess_env


def _production_env(var_dir: Path, **overrides: str) -> dict[str, str]:
    env = subprocess_env(
        embedded=True, DJANGO_SETTINGS_MODULE="config.settings.production", GOV_VAR_DIR=str(var_dir),
        DJANGO_ALLOWED_HOSTS="governance.example.org", LOG_LEVEL="WARNING",
    )  # fmt: skip
    for name in ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE", "DJANGO_DEBUG"):
        env.pop(name, None)
    env.update(overrides)
    return env


def test_check_deploy_finds_nothing(tmp_path: Path) -> None:
    key_file = tmp_path / "secret-key"
    key_file.write_text(secrets.token_urlsafe(50) + "\n")
    env = _production_env(tmp_path, DJANGO_SECRET_KEY_FILE=str(key_file))
    keygen = manage_in(env, "ledger", "keygen")
    assert keygen.returncode == 0, keygen.stderr
    result = manage_in(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr and "ERRORS" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "django-insecure-" + "x1y2z3" * 10}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "too-short"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_DEBUG": "true"}, "DJANGO_DEBUG"),
        ({"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS"),
    ],
    ids=["no-secret", "insecure-secret", "short-secret", "debug-on", "no-hosts"],
)
def test_start_up_refuses_an_unsafe_configuration(tmp_path: Path, overrides: dict[str, str], variable: str) -> None:
    result = manage_in(_production_env(tmp_path, **overrides), "check")
    assert result.returncode != 0
    assert f"configuration error: {variable}:" in result.stderr
    assert "Traceback" not in result.stderr
