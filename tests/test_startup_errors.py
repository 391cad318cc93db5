"""A missing or malformed setting stops start-up with one clear line naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from audits.ledger.keys import SignerKey, write_signer_keys
from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.own_service  # conftest.OWN_SERVICE


def _with_signing_key(var_dir: Path) -> Path:
    path = var_dir / "keys" / "ledger-signing.key"
    if not path.exists():
        write_signer_keys(path, [SignerKey.generate("test.example/ledger")])
    return path


def _run_check(
    tmp_path: Path,
    settings_module: str = "config.settings",
    *,
    command: tuple[str, ...] = ("manage.py", "check"),
    **env: str,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=subprocess_env(embedded=True, GOV_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE=settings_module, **env),
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
        ({"GOV_PUBLIC_URL": "governance.example.org"}, "GOV_PUBLIC_URL"),
        ({"API_TOKEN_MAX_DAYS": "0"}, "API_TOKEN_MAX_DAYS"),
    ],
)
def test_bad_setting_stops_with_one_line(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    _with_signing_key(tmp_path)
    result = _run_check(tmp_path, **env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}: ")
    assert "Traceback" not in result.stderr + result.stdout


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    _with_signing_key(tmp_path)
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
    keygen = _run_check(tmp_path, command=("manage.py", "ledger", "keygen"))
    assert keygen.returncode == 0, keygen.stderr
    assert (tmp_path / "keys" / "ledger-signing.key").stat().st_mode & 0o077 == 0
    result = _run_check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    secret = tmp_path / "secret-key"
    assert secret.stat().st_mode & 0o077 == 0, "the generated secret key must be readable by its owner only"


def test_a_missing_or_exposed_signing_key_stops_every_process(tmp_path: Path) -> None:
    missing = _run_check(tmp_path)
    assert missing.returncode != 0
    assert "(ledger.E001) LEDGER_SIGNING_KEY_FILE: signing key file" in missing.stderr
    assert "does not exist; create it with `python manage.py ledger keygen`" in missing.stderr
    web = _run_check(tmp_path, command=("-c", "import config.wsgi"))
    assert web.returncode != 0
    lines = web.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: LEDGER_SIGNING_KEY_FILE: signing key file")

    key = _with_signing_key(tmp_path)
    key.chmod(0o644)
    exposed = _run_check(tmp_path)
    assert exposed.returncode != 0
    assert "accessible to group or others (mode 644); run chmod 600" in exposed.stderr
    web = _run_check(tmp_path, command=("-c", "import config.wsgi"))
    assert web.returncode != 0 and "accessible to group or others" in web.stderr and "Traceback" not in web.stderr
    key.chmod(0o600)
    assert _run_check(tmp_path).returncode == 0
