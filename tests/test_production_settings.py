"""The production settings: Django's deployment check passes with no finding (single sign-on
configured or not), and start-up stops with a line naming the variable when the secret is missing
or weak, DEBUG is on, no host is set, or single sign-on lacks its issuer or secret or would talk
to its provider over plain HTTP."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from conftest import manage_in, subprocess_env

pytestmark = pytest.mark.own_service  # conftest.OWN_SERVICE

# Single sign-on as a deployment configures it (discovery from the issuer; nothing is fetched at start-up).
SSO = {
    "OIDC_RP_CLIENT_ID": "llmops-governance",
    "OIDC_RP_CLIENT_SECRET": secrets.token_urlsafe(32),
    "OIDC_OP_ISSUER": "https://sso.example.org/realms/staff",
}


def _production_env(var_dir: Path, **overrides: str) -> dict[str, str]:
    env = subprocess_env(
        embedded=True, DJANGO_SETTINGS_MODULE="config.settings.production", GOV_VAR_DIR=str(var_dir),
        DJANGO_ALLOWED_HOSTS="governance.example.org", LOG_LEVEL="WARNING",
    )  # fmt: skip
    for name in ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE", "DJANGO_DEBUG"):
        env.pop(name, None)
    env.update(overrides)
    return env


@pytest.mark.parametrize("sso", [False, True], ids=["password-only", "with-single-sign-on"])
def test_check_deploy_finds_nothing(tmp_path: Path, sso: bool) -> None:
    key_file = tmp_path / "secret-key"
    key_file.write_text(secrets.token_urlsafe(50) + "\n")
    env = _production_env(tmp_path, DJANGO_SECRET_KEY_FILE=str(key_file), **(SSO if sso else {}))
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
        ({"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), **SSO, "OIDC_OP_ISSUER": "http://sso.example.org"},
         "OIDC_OP_ISSUER"),
        ({"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), **SSO, "OIDC_OP_TOKEN_ENDPOINT": "http://sso.example.org/t"},
         "OIDC_OP_TOKEN_ENDPOINT"),
        ({"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), **SSO, "OIDC_OP_ISSUER": ""}, "OIDC_OP_ISSUER"),
        ({"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), **SSO, "OIDC_RP_CLIENT_SECRET": ""},
         "OIDC_RP_CLIENT_SECRET"),
    ],
    ids=["no-secret", "insecure-secret", "short-secret", "debug-on", "no-hosts", "sso-over-http",
         "sso-endpoint-over-http", "sso-without-issuer", "sso-without-client-secret"],
)  # fmt: skip
def test_start_up_refuses_an_unsafe_configuration(tmp_path: Path, overrides: dict[str, str], variable: str) -> None:
    result = manage_in(_production_env(tmp_path, **overrides), "check")
    assert result.returncode != 0
    assert f"configuration error: {variable}:" in result.stderr
    assert "Traceback" not in result.stderr
