"""Typed readers for environment variables, used by the settings and nothing else.

Every setting of the service comes from an environment variable through one of these helpers.
A missing or malformed value stops start-up at once with one line that names the variable
(``SettingError`` is a ``SystemExit``, so no process prints a traceback wall for it). Secrets may
come from a file: for a variable ``NAME``, ``NAME_FILE`` holds the path of a file whose content is
the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingError(SystemExit):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, name: str, problem: str) -> None:
        self.variable = name
        super().__init__(f"configuration error: {name}: {problem}")


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str | None = None) -> str:
    value = _raw(name)
    if value is None:
        if default is None:
            raise SettingError(name, "is required but not set")
        return default
    return value


def env_optional_str(name: str) -> str | None:
    return _raw(name)


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingError(name, f"expected one of true/false/1/0/yes/no/on/off, got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingError(name, f"expected an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise SettingError(name, f"must be at least {minimum}, got {number}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingError(name, f"expected a number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise SettingError(name, f"must be at least {minimum}, got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    return Path(value).expanduser().resolve() if value is not None else default


def env_secret(name: str) -> str | None:
    """Read a secret from ``NAME`` or from the file named by ``NAME_FILE``; ``None`` if neither."""
    file_var = f"{name}_FILE"
    direct = _raw(name)
    path = _raw(file_var)
    if direct is not None and path is not None:
        raise SettingError(name, f"set either {name} or {file_var}, not both")
    if path is None:
        return direct
    try:
        content = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingError(file_var, f"cannot read {path}: {exc.strerror or exc}") from None
    if not content:
        raise SettingError(file_var, f"{path} is empty")
    return content


@dataclass(frozen=True)
class DatabaseUrl:
    engine: str
    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: str = ""
    options: dict[str, str] | None = None


def parse_database_url(name: str, url: str) -> DatabaseUrl:
    """Parse ``sqlite:///path`` or ``postgres://user:pass@host:port/db?sslmode=...``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise SettingError(name, "a SQLite URL is sqlite:///relative/path or sqlite:////abs/path")
        # sqlite:///var/db.sqlite3 -> relative "var/db.sqlite3"; sqlite:////abs -> "/abs"
        return DatabaseUrl(engine="sqlite", name=path[1:])
    if scheme in {"postgres", "postgresql", "pgsql"}:
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise SettingError(name, "a PostgreSQL URL needs a database name: postgres://user@host/db")
        try:
            port = str(parts.port or "")
        except ValueError:
            raise SettingError(name, "the port is not a number") from None
        return DatabaseUrl(
            engine="postgresql",
            name=database,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname or "",
            port=port,
            options=dict(parse_qsl(parts.query)),
        )
    if not scheme:
        raise SettingError(name, "not a URL; expected sqlite:///path or postgres://user:pass@host/db")
    raise SettingError(name, f"unsupported scheme {scheme!r}; expected sqlite or postgres")
