"""Deployment grants: signed statements that let a model server serve one set of weights.

Standard library, ``cryptography`` and ``rfc8785`` only: the model server imports this module and
never Django. A grant is a C2SP signed note whose body is one line, the RFC 8785 canonical JSON of
the statement::

    {"deployment":...,"environment":...,"expires_at":...,"grant_id":...,...}\\n
    \\n
    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n   (one line per signer)

The signature lines are those of the ledger's checkpoints (``audits.ledger.notes``), made with the
ledger's keys (``audits.ledger.keys``), so one published verifier key checks both. A verifier
ignores signatures by keys it does not know, and accepts a grant when at least one known key signed
it and every signature by a known key verifies. The body must be canonical: a re-encoded statement
(other key order, other spacing) is refused, so one statement has exactly one signed form.

Times are ISO 8601 in UTC (``2025-06-01T12:00:00Z``; an explicit ``+00:00`` is accepted too). A
grant is valid from ``issued_at`` (inclusive) to ``expires_at`` (exclusive), with no clock-skew
allowance: the issuer and the server must keep their clocks in sync.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785

from audits.ledger.keys import SignerKey, VerifierKey
from audits.ledger.notes import SIGNATURE_PREFIX, NoteError, Signature, parse_signature_lines

RUNTIMES = ("transformers", "onnx")
GUARD_MODES = ("off", "redact", "block")
STATEMENT_FIELDS = (
    "grant_id", "deployment", "environment", "model_version", "weights_digest", "runtime",
    "target", "guard", "issued_at", "expires_at",
)  # fmt: skip
TARGET_FIELDS = ("gpu_type", "gpu_count", "replicas", "max_batch", "max_tokens", "max_prompt_chars")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CHUNK = 1 << 20


class GrantError(Exception):
    """A grant is malformed, not signed by a known key, badly signed, incomplete or out of date."""


def utc_timestamp(moment: datetime) -> str:
    """``moment`` as the grants' ISO 8601 form, ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, UTC)."""
    if moment.tzinfo is None:
        raise ValueError("a grant time must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: Any, field: str) -> datetime:
    if not isinstance(text, str):
        raise GrantError(f"{field} is not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GrantError(f"{field} {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None or moment.utcoffset() != UTC.utcoffset(None):
        raise GrantError(f"{field} {text!r} is not in UTC (end it with Z)")
    return moment


def _require_int(value: Any, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise GrantError(f"{name} must be an integer of at least {minimum}, not {value!r}")


def _require_text(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise GrantError(f"{name} must be a non-empty string, not {value!r}")


def check_statement(statement: Any) -> None:
    """Raise ``GrantError`` naming the first missing or ill-typed field of ``statement``."""
    if not isinstance(statement, dict):
        raise GrantError("a grant statement is a JSON object")
    missing = [name for name in STATEMENT_FIELDS if name not in statement]
    if missing:
        raise GrantError(f"the grant lacks the fields: {', '.join(missing)}")
    unknown = sorted(set(statement) - set(STATEMENT_FIELDS))
    if unknown:
        raise GrantError(f"the grant holds unknown fields: {', '.join(unknown)}")
    for name in ("grant_id", "environment"):
        _require_text(statement[name], name)
    for name in ("deployment", "model_version"):  # a name or a row id
        value = statement[name]
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise GrantError(f"{name} must be a non-empty string or an integer, not {value!r}")
    if not isinstance(statement["weights_digest"], str) or not _DIGEST.fullmatch(statement["weights_digest"]):
        raise GrantError(f"weights_digest must be sha256:<64 hex digits>, not {statement['weights_digest']!r}")
    if statement["runtime"] not in RUNTIMES:
        raise GrantError(f"runtime must be one of {', '.join(RUNTIMES)}, not {statement['runtime']!r}")

    target = statement["target"]
    if not isinstance(target, dict):
        raise GrantError("target is a JSON object")
    missing = [name for name in TARGET_FIELDS if name not in target]
    if missing:
        raise GrantError(f"the grant's target lacks the fields: {', '.join(missing)}")
    _require_int(target["gpu_count"], "target.gpu_count", 0)
    if not isinstance(target["gpu_type"], str) or (target["gpu_count"] > 0 and not target["gpu_type"]):
        raise GrantError(f"target.gpu_type must be a string, named when gpu_count > 0, not {target['gpu_type']!r}")
    for name in ("replicas", "max_batch", "max_tokens", "max_prompt_chars"):
        _require_int(target[name], f"target.{name}", 1)

    guard = statement["guard"]
    if not isinstance(guard, dict) or "mode" not in guard or "entities" not in guard:
        raise GrantError("guard is a JSON object with mode and entities")
    if guard["mode"] not in GUARD_MODES:
        raise GrantError(f"guard.mode must be one of {', '.join(GUARD_MODES)}, not {guard['mode']!r}")
    entities = guard["entities"]
    if not isinstance(entities, list) or not all(isinstance(e, str) and e for e in entities):
        raise GrantError("guard.entities must be a list of entity type names")
    if guard["mode"] != "off" and not entities:
        raise GrantError(f"guard mode {guard['mode']} needs at least one entity type")

    issued = parse_utc(statement["issued_at"], "issued_at")
    expires = parse_utc(statement["expires_at"], "expires_at")
    if expires <= issued:
        raise GrantError("expires_at is not after issued_at")


def _canonical_body(statement: dict[str, Any]) -> str:
    try:
        return rfc8785.dumps(statement).decode("utf-8") + "\n"
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise GrantError(f"the statement has no canonical JSON form: {exc}") from None


def sign_grant(statement: dict[str, Any], signers: Sequence[SignerKey]) -> str:
    """The signed note of ``statement`` (checked first: an incomplete grant is never signed)."""
    if not signers:
        raise GrantError("a grant needs at least one signing key")
    check_statement(statement)
    return sign_note(statement, signers)


def _parse_note(text: str, what: str) -> tuple[str, list[Signature]]:
    if not isinstance(text, str) or not text:
        raise GrantError(f"malformed {what}: empty")
    if "\r" in text or any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise GrantError(f"malformed {what}: it holds control characters")
    body_text, sep, signature_block = text.partition("\n\n")
    if not sep:
        raise GrantError(f"malformed {what}: no blank line between the statement and its signatures")
    if not body_text or "\n" in body_text:
        raise GrantError(f"malformed {what}: the body is one line of canonical JSON")
    try:
        signatures = parse_signature_lines(signature_block)
    except NoteError as exc:
        raise GrantError(f"malformed {what}: {exc}") from None
    return body_text + "\n", signatures


def sign_note(statement: dict[str, Any], signers: Sequence[SignerKey]) -> str:
    """The signed note of ``statement``'s canonical JSON (the caller has checked its fields)."""
    if not signers:
        raise GrantError("a signed note needs at least one signing key")
    body = _canonical_body(statement)
    lines = []
    for signer in signers:
        blob = base64.b64encode(signer.key_id + signer.sign(body.encode())).decode()
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {blob}\n")
    return body + "\n" + "".join(lines)


def verify_note(text: str, verifiers: Iterable[VerifierKey], *, what: str = "grant") -> Any:
    """The JSON statement of the signed note ``text`` (a grant, or a client list), once at least
    one known key signed it, every signature by a known key verifies and its body is canonical.
    Raises ``GrantError`` naming ``what`` otherwise; the caller checks the statement's fields."""
    body, signatures = _parse_note(text, what)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = 0
    for sig in signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            continue
        if not key.verify(sig.signature, body.encode()):
            raise GrantError(f"the {what}'s signature by {sig.name}+{sig.key_id.hex()} does not verify")
        verified += 1
    if verified == 0:
        names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in signatures)
        raise GrantError(f"the {what} has no signature by a known key (signed by: {names})")
    try:
        statement = json.loads(body)
    except ValueError as exc:
        raise GrantError(f"malformed {what}: the body is not JSON ({exc})") from None
    if not isinstance(statement, dict):
        raise GrantError(f"malformed {what}: the body is not a JSON object")
    if _canonical_body(statement) != body:
        raise GrantError(f"malformed {what}: the body is not RFC 8785 canonical JSON")
    return statement


def verify_grant(text: str, verifiers: Iterable[VerifierKey], *, now: datetime | None = None) -> dict[str, Any]:
    """The statement of the grant ``text``, once its signatures, fields and validity period hold.

    Raises ``GrantError`` for a malformed note, no signature by a known key, a signature that does
    not verify, a non-canonical body, missing or ill-typed fields, and a grant that is not yet
    valid or has expired (at ``now``, by default the current time).
    """
    statement = verify_note(text, verifiers)
    check_statement(statement)
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if moment < parse_utc(statement["issued_at"], "issued_at"):
        raise GrantError(f"the grant is not valid before {statement['issued_at']}")
    if moment >= parse_utc(statement["expires_at"], "expires_at"):
        raise GrantError(f"the grant expired at {statement['expires_at']}")
    return statement


def folder_weights_digest(folder: Path) -> str:
    """The weights digest of a local folder, as ``registry.services`` computes it on registration:
    ``sha256:`` + SHA-256 over the sorted lines ``<posix path relative to the folder> <hex SHA-256
    of the file>\\n``, for every file (``rglob``, so hidden files count and symbolic links to
    folders are not followed). Raises ``ValueError`` for a missing or empty folder, and for a file
    that links outside it."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise ValueError(f"{folder} is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    if not paths:
        raise ValueError(f"{folder} holds no file")
    lines = []
    for path in paths:
        if not path.resolve().is_relative_to(root):
            raise ValueError(f"{path} links outside {folder}")
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha.update(chunk)
        lines.append((path.relative_to(root).as_posix(), sha.hexdigest()))
    listing = "".join(f"{relative} {digest}\n" for relative, digest in sorted(lines))
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()
