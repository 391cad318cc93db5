"""Client credentials of the model server: who may call ``POST /v1/completions``, and how often.

Standard library, ``cryptography`` and ``rfc8785`` only (through ``serving.grants``): the model
server imports this module and never Django.

A credential is ``gsc_<12 hex digits>_<43 characters of base64url>``: the 12 hex digits are its
public prefix (its name in the ledger, the admin and the logs), the rest 256 random bits. The
service stores only its SHA-256 (256 random bits leave nothing to brute-force, so a fast hash is
enough) and shows the credential once, when it is issued. Callers send it as
``Authorization: Bearer <credential>``.

The service tells a server which credentials it accepts through a **client list**: a C2SP signed
note, signed with the ledger's keys like the grant, whose body is the canonical JSON of::

    {"credentials": [{"expires_at": ..., "prefix": ..., "sha256": ...}, ...],
     "deployment": <the grant's deployment>, "issued_at": <UTC time, microseconds>}

The service rewrites the file (atomically: a new file moved over the old one) whenever a
credential of the deployment is issued or revoked, and its supervisor rewrites it when it differs
from what the database says. The server checks the file's identity (inode, size, modification
time) on every request and reads it again when it changed. A list that does not verify, names
another deployment, or is older than the list the server holds is refused: from then on no
credential is accepted until a valid, newer list is written (fail closed; the reason goes to
standard error once). A missing or invalid list at start refuses the start.

Rate limits are token buckets kept in the server's memory, one per credential (``--rate-limit``,
``N/PERIOD``: a bucket holds N requests and refills N every PERIOD) and one per client address
that only failed authentications draw on, so a stranger guessing credentials is slowed down
without ever slowing down the holder of a valid one. Replicas count separately.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audits.ledger.keys import SignerKey, VerifierKey
from serving.grants import GrantError, parse_utc, sign_note, verify_note

CREDENTIAL_PREFIX = "gsc"  # the public part of every client credential
_CREDENTIAL = re.compile(r"gsc_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
LIST_FIELDS = ("credentials", "deployment", "issued_at")
ENTRY_FIELDS = ("expires_at", "prefix", "sha256")
_RATE = re.compile(r"([1-9][0-9]*)/([1-9][0-9]*)?([smhd])")
_PERIOD_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_BUCKETS = 10_000  # beyond this, full buckets are dropped (they hold nothing worth keeping)


def credential_new() -> tuple[str, str]:
    """A fresh credential and its public prefix: ``(prefix, credential)``."""
    prefix = secrets.token_hex(6)
    return prefix, f"{CREDENTIAL_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"


def credential_digest(credential: str) -> str:
    """The hex SHA-256 the service stores and the client list carries."""
    return hashlib.sha256(credential.encode()).hexdigest()


def credential_prefix(credential: str) -> str | None:
    """The public prefix of a well-formed credential, or ``None``."""
    match = _CREDENTIAL.fullmatch(credential)
    return match.group(1) if match else None


def bearer_credential(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, or ``None`` (no such header)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def parse_rate(rate: str) -> tuple[int, float]:
    """``"120/m"`` -> ``(120, 60.0)``; ``"10/30s"`` -> ``(10, 30.0)``. ValueError naming the form."""
    match = _RATE.fullmatch(rate)
    if not match:
        raise ValueError(f"expected a rate like 120/m or 10/30s, got {rate!r}")
    count, multiple, unit = match.groups()
    return int(count), float(int(multiple or "1") * _PERIOD_S[unit])


# --- The signed client list ------------------------------------------------------------------


def check_client_list(statement: Any) -> None:
    """Raise ``GrantError`` naming the first missing or ill-typed field of a client list."""
    if not isinstance(statement, dict) or sorted(statement) != list(LIST_FIELDS):
        raise GrantError(f"a client list is a JSON object with exactly the fields {', '.join(LIST_FIELDS)}")
    deployment = statement["deployment"]
    if isinstance(deployment, bool) or not isinstance(deployment, str | int) or deployment == "":
        raise GrantError(f"the client list's deployment must be a non-empty string or an integer, not {deployment!r}")
    parse_utc(statement["issued_at"], "issued_at")
    entries = statement["credentials"]
    if not isinstance(entries, list):
        raise GrantError("the client list's credentials are a list")
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or sorted(entry) != list(ENTRY_FIELDS):
            raise GrantError(f"credentials[{number}] is an object with exactly {', '.join(ENTRY_FIELDS)}")
        if not isinstance(entry["prefix"], str) or not re.fullmatch(r"[0-9a-f]{12}", entry["prefix"]):
            raise GrantError(f"credentials[{number}].prefix is not 12 hex digits")
        if not isinstance(entry["sha256"], str) or not _SHA256_HEX.fullmatch(entry["sha256"]):
            raise GrantError(f"credentials[{number}].sha256 is not 64 hex digits")
        parse_utc(entry["expires_at"], f"credentials[{number}].expires_at")


def sign_client_list(statement: dict[str, Any], signers: Sequence[SignerKey]) -> str:
    """The signed note of a client list (checked first)."""
    check_client_list(statement)
    return sign_note(statement, signers)


def verify_client_list(text: str, verifiers: Iterable[VerifierKey], *, deployment: Any) -> dict[str, Any]:
    """The statement of a client list once it is signed by a known key, well formed and names
    ``deployment`` (the grant's); ``GrantError`` naming what is wrong otherwise."""
    statement = verify_note(text, verifiers, what="client list")
    check_client_list(statement)
    if statement["deployment"] != deployment:
        raise GrantError(f"the client list is for deployment {statement['deployment']!r}, not {deployment!r}")
    return dict(statement)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the credential's public prefix."""

    prefix: str


class AuthError(Exception):
    """A caller that is not authenticated; ``code`` is the stable reason (logged and answered)."""

    def __init__(self, code: str, message: str, prefix: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.prefix = code, message, prefix


class ClientList:
    """The credentials the server accepts, read from the signed client list and read again
    whenever the file changes (checked on every request: one ``stat``)."""

    def __init__(self, path: Path, verifiers: Sequence[VerifierKey], deployment: Any) -> None:
        self._path = path
        self._verifiers = list(verifiers)
        self._deployment = deployment
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int] | None = None
        self._issued_at: datetime | None = None
        self._entries: dict[str, tuple[str, datetime]] = {}
        self.problem: str | None = None
        self._refresh()
        if self.problem:
            raise GrantError(self.problem)

    def _refresh(self) -> None:
        try:
            st = self._path.stat()
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError as exc:
            identity = None
            if self._identity is not None or self.problem is None:
                self._fail(f"cannot read the client list {self._path}: {exc.strerror or exc}")
            self._identity = identity
            return
        if identity == self._identity:
            return
        self._identity = identity
        try:
            statement = verify_client_list(
                self._path.read_text(encoding="utf-8"), self._verifiers, deployment=self._deployment
            )
        except (OSError, UnicodeDecodeError) as exc:
            self._fail(f"cannot read the client list {self._path}: {getattr(exc, 'strerror', None) or exc}")
            return
        except GrantError as exc:
            self._fail(f"the client list {self._path} is refused: {exc}")
            return
        issued_at = parse_utc(statement["issued_at"], "issued_at")
        if self._issued_at is not None and issued_at < self._issued_at:
            self._fail(
                f"the client list {self._path} was issued at {statement['issued_at']}, before the list this "
                f"server holds ({self._issued_at.isoformat()}): refused as a replay"
            )
            return
        self._issued_at = issued_at
        self._entries = {
            e["prefix"]: (e["sha256"], parse_utc(e["expires_at"], "expires_at")) for e in statement["credentials"]
        }
        if self.problem is not None:
            print(json.dumps({"event": "client_list_accepted", "path": str(self._path)}), file=sys.stderr)
        self.problem = None

    def _fail(self, reason: str) -> None:
        """Accept no credential until a valid, newer list is written; say why once."""
        self._entries = {}
        self.problem = reason
        print(json.dumps({"event": "client_list_refused", "reason": reason}), file=sys.stderr, flush=True)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, header: str | None, *, now: datetime | None = None) -> Caller:
        """The caller the ``Authorization`` header names, or ``AuthError`` saying why not."""
        credential = bearer_credential(header)
        if credential is None:
            raise AuthError("missing_credential", "send a client credential: Authorization: Bearer <credential>")
        prefix = credential_prefix(credential)
        if prefix is None:
            raise AuthError("invalid_credential", "the credential is not valid for this deployment")
        with self._lock:
            self._refresh()
            entry = self._entries.get(prefix)
        digest = credential_digest(credential)
        # Compared in constant time even when the prefix is unknown, so timing does not tell which.
        stored, expires_at = entry if entry is not None else ("0" * 64, datetime.min.replace(tzinfo=UTC))
        if not hmac.compare_digest(stored, digest) or entry is None:
            raise AuthError("invalid_credential", "the credential is not valid for this deployment", prefix)
        if (now or datetime.now(UTC)) >= expires_at:
            raise AuthError("invalid_credential", "the credential is not valid for this deployment", prefix)
        return Caller(prefix)


class RateLimiter:
    """Token buckets by key: each holds ``capacity`` requests and refills ``capacity`` every
    ``period_s`` seconds. ``take`` answers 0 when the request may go, else the seconds until it
    could."""

    def __init__(self, capacity: int, period_s: float) -> None:
        self.capacity = capacity
        self.period_s = period_s
        self._per_s = capacity / period_s
        self._buckets: dict[str, tuple[float, float]] = {}  # key: (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, *, now: float | None = None) -> float:
        moment = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.capacity), moment))
            tokens = min(float(self.capacity), tokens + (moment - at) * self._per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, moment)
                return (1.0 - tokens) / self._per_s
            self._buckets[key] = (tokens - 1.0, moment)
            if len(self._buckets) > _MAX_BUCKETS:
                self._forget_full(moment)
            return 0.0

    def _forget_full(self, moment: float) -> None:
        full = [
            key for key, (tokens, at) in self._buckets.items()
            if tokens + (moment - at) * self._per_s >= self.capacity
        ]  # fmt: skip
        for key in full:
            del self._buckets[key]


def security_event(
    event: str, *, reason: str, status: int, client_ip: str | None, path: str, request_id: str,
    deployment: Any, prefix: str | None = None,
) -> None:  # fmt: skip
    """One line on standard error in the shape of the service's ``security`` log (common/
    security_log.py): when, who (``username`` ``client:<prefix>`` for a credential the server
    could name, else ``anonymous``), what and where. Never the credential or the Authorization
    header."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "WARNING",
        "logger": "security",
        "message": f"{event}: {reason}",
        "request_id": request_id,
        "event": event,
        "outcome": "denied",
        "reason": reason,
        "user_id": None,
        "username": f"client:{prefix}" if prefix else "anonymous",
        "http_method": "POST",
        "path": path[:300],
        "client_ip": client_ip,
        "status": status,
        "deployment": deployment,
    }
    print(json.dumps(entry, ensure_ascii=False), file=sys.stderr, flush=True)
