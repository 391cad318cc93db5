from __future__ import annotations

from pathlib import Path

import pytest

from config.env import (
    SettingError,
    env_bool,
    env_int,
    env_list,
    env_secret,
    env_str,
    parse_database_url,
)

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)


def test_sqlite_urls_relative_and_absolute() -> None:
    assert parse_database_url("DATABASE_URL", "sqlite:///var/db.sqlite3").name == "var/db.sqlite3"
    assert parse_database_url("DATABASE_URL", "sqlite:////srv/gov/db.sqlite3").name == "/srv/gov/db.sqlite3"


def test_postgres_url_with_escaped_password_and_options() -> None:
    db = parse_database_url("DATABASE_URL", "postgres://gov:p%40ss@db.internal:6432/governance?sslmode=require")
    assert (db.engine, db.user, db.password, db.host, db.port, db.name) == (
        "postgresql",
        "gov",
        "p@ss",
        "db.internal",
        "6432",
        "governance",
    )
    assert db.options == {"sslmode": "require"}


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://x@y/z", "unsupported scheme 'mysql'"),
        ("not a url", "not a URL"),
        ("postgres://gov@db/", "needs a database name"),
        ("postgres://gov@db:notaport/x", "port is not a number"),
        ("sqlite://", "SQLite URL"),
    ],
)
def test_malformed_database_urls_name_the_variable(url: str, fragment: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_database_url("DATABASE_URL", url)
    message = str(caught.value.code)
    assert message.startswith("configuration error: DATABASE_URL: ")
    assert fragment in message


def test_typed_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BOOL", "Yes")
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_LIST", " a, b ,,c ")
    assert env_bool("X_BOOL", False) is True
    assert env_int("X_INT", 0) == 42
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    assert env_str("X_UNSET_VARIABLE", "fallback") == "fallback"
    monkeypatch.setenv("X_INT", "4.5")
    with pytest.raises(SettingError, match="X_INT: expected an integer"):
        env_int("X_INT", 0)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(SettingError, match="X_INT: must be at least 1"):
        env_int("X_INT", 5, minimum=1)
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(SettingError, match="X_BOOL: expected one of"):
        env_bool("X_BOOL", False)
    with pytest.raises(SettingError, match="X_REQUIRED: is required"):
        env_str("X_REQUIRED")


def test_secret_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_secret("X_SECRET") == "s3cret-value"
    monkeypatch.setenv("X_SECRET", "inline")
    with pytest.raises(SettingError, match="set either X_SECRET or X_SECRET_FILE"):
        env_secret("X_SECRET")
    monkeypatch.delenv("X_SECRET")
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingError, match="X_SECRET_FILE: cannot read"):
        env_secret("X_SECRET")
    secret.write_text("  \n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    with pytest.raises(SettingError, match=r"X_SECRET_FILE: .* is empty"):
        env_secret("X_SECRET")
