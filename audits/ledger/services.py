"""Writes of the ledger: append entries, sign checkpoints, seal and erase personal data.

``ledger_append`` is called by every governed service inside its own transaction: the entry
commits with the change it describes, or neither does. Appends are serialised on the head row and
update the stored subtree hashes incrementally; nothing here ever recomputes the tree.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

import rfc8785
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audits.ledger import kek, merkle, notes, scopes
from audits.ledger.keys import KeyFileError, load_signer_keys
from audits.ledger.models import Checkpoint, DataSubjectKey, PublishedKey
from common.errors import Conflict, DomainError
from common.request_context import get_request_id

ENTRY_VERSION = 1
MAX_PAYLOAD_BYTES = 60 * 1024
NODE_LEVEL_SHIFT = 48
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_SUBJECT_REF = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")
SEALED_MARK = "$sealed"
ERASED = "[erased]"
WAL_PURGE_WAIT_S = 2.0  # how long an erasure waits for open reads to end before it leaves the purge to beat
_WAL_PURGE_TRY_MS = 50  # each try holds new writers back at most this long while it waits for readers

logger = logging.getLogger("audits.ledger")


class LedgerError(DomainError):
    """A ledger request the service refuses; nothing was written."""


class LedgerIntegrityError(Exception):
    """The stored ledger contradicts itself or an earlier checkpoint. Never signed over."""


@dataclass(frozen=True)
class Subject:
    type: str
    id: str
    digest: str | None = None


@dataclass(frozen=True)
class Actor:
    """Who acted, frozen at the time: the id and the display name as they were."""

    id: str
    name: str

    @classmethod
    def of(cls, user: Any) -> Actor:
        if isinstance(user, Actor):
            return user
        if user is None or not getattr(user, "is_authenticated", False):
            raise LedgerError("invalid_actor", "a ledger entry needs an authenticated actor")
        return cls(id=str(user.pk), name=user.get_username())


@dataclass(frozen=True)
class AppendRequest:
    actor: Actor
    action: str
    subject: Subject | None = None
    payload: Any = None
    policy_hash: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Appended:
    index: int
    leaf_hash: bytes
    body: bytes


def node_key(level: int, position: int) -> int:
    return (level << NODE_LEVEL_SHIFT) | position


def _validate(request: AppendRequest) -> bytes:
    """Refuse bad input before any row is touched, so the caller's transaction stays usable.
    Returns the payload's canonical bytes."""
    if not _ACTION.match(request.action):
        raise LedgerError("invalid_action", f"action {request.action!r} is not a dotted lower-case name")
    try:
        payload = rfc8785.dumps(request.payload)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise LedgerError("payload_not_json", f"the payload is not JSON-serialisable: {exc}") from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise LedgerError("payload_too_large", f"the payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    return payload


def entry_document(index: int, created_at: datetime, request: AppendRequest) -> dict[str, Any]:
    """The entry as a JSON document; its RFC 8785 form is what the tree hashes."""
    subject = request.subject
    return {
        "v": ENTRY_VERSION,
        "index": index,
        "time": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": {"id": request.actor.id, "name": request.actor.name},
        "action": request.action,
        "subject": None if subject is None else {"type": subject.type, "id": subject.id, "digest": subject.digest},
        "request_id": request.request_id,
        "policy_hash": request.policy_hash,
        "payload": request.payload,
    }


def canonical_text(value: Any) -> bytes:
    """``rfc8785.dumps`` of a string or None, without the general encoder. For strings, JSON's own
    escaping with ``ensure_ascii`` off is RFC 8785's: the quote and the backslash, the short
    escapes of backspace, form feed, newline, carriage return and tab, ``\\u00xx`` in lower case
    for the other control characters, and nothing else. A lone surrogate fails to encode as UTF-8
    and goes to rfc8785, which refuses it as before; so does any other type."""
    if value is None:
        return b"null"
    if isinstance(value, str):
        try:
            return encode_basestring(value).encode()
        except UnicodeEncodeError:
            pass
    return rfc8785.dumps(value)


def canonical_body(index: int, created_at: datetime, request: AppendRequest, payload: bytes) -> bytes:
    """``rfc8785.dumps(entry_document(...))``, assembled from the already canonical payload bytes:
    RFC 8785 orders object keys by their UTF-16 code units, so the envelope's (ASCII) keys always
    come in this order, and the payload is canonicalised once instead of twice."""
    text, actor, subject = canonical_text, request.actor, request.subject
    return b"".join(
        (
            b'{"action":', text(request.action),
            b',"actor":{"id":', text(actor.id), b',"name":', text(actor.name),
            b'},"index":', b"%d" % index,
            b',"payload":', payload,
            b',"policy_hash":', text(request.policy_hash),
            b',"request_id":', text(request.request_id),
            b',"subject":', b"null" if subject is None else b"".join((
                b'{"digest":', text(subject.digest), b',"id":', text(subject.id),
                b',"type":', text(subject.type), b"}",
            )),
            b',"time":', text(created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
            b',"v":', b"%d}" % ENTRY_VERSION,
        )
    )  # fmt: skip


class _DriverCursor:
    """The database driver's own cursor, its errors raised as Django's: the inline append is the
    hottest write, and Django's cursor wrapper (execute hooks, placeholder rewriting per statement)
    cost an embedded append about 7 % of its throughput (bench.ledger, in turns). Its statements
    are therefore not in Django's query log. Statements are written with ``%s``."""

    def __init__(self) -> None:
        connection.ensure_connection()
        self.raw = connection.connection.cursor()
        self.qmark = connection.vendor == "sqlite"

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.qmark else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with connection.wrap_database_errors:
            self.raw.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with connection.wrap_database_errors:
            self.raw.executemany(self._sql(sql), rows)

    def fetchone(self) -> Any:
        with connection.wrap_database_errors:
            return self.raw.fetchone()

    def __enter__(self) -> _DriverCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


def _lock_head(cursor: Any) -> merkle.CompactRange:
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    cursor.execute(f"SELECT size, frontier FROM ledger_ledgerhead WHERE id = 1{lock}")  # noqa: S608
    row = cursor.fetchone()
    if row is None:
        cursor.execute("SELECT COUNT(*) FROM ledger_entry")
        if cursor.fetchone()[0]:
            raise LedgerIntegrityError("the ledger head row is missing while entries exist")
        cursor.execute("INSERT INTO ledger_ledgerhead (id, size, frontier) VALUES (1, 0, %s)", [b""])
        return merkle.CompactRange()
    return merkle.CompactRange.decode(int(row[0]), bytes(row[1]))


def ledger_append_many(requests: Sequence[AppendRequest]) -> list[Appended]:
    """Append entries in order, inside the caller's transaction (or one of its own).

    Inline sequencing (SQLite, and PostgreSQL when configured) locks the ledger head and adds the
    entries to the tree here; deferred sequencing (``_append_deferred``) only records them."""
    if not requests:
        return []
    payloads = [_validate(request) for request in requests]
    projects = _attribute(requests)  # before the lock: reads of the subjects' rows, not of the ledger
    now = timezone.now()
    if settings.LEDGER_SEQUENCING == "deferred" and connection.vendor == "postgresql":
        return _append_deferred(requests, payloads, projects, now)
    adapt = connection.ops.adapt_datetimefield_value
    with transaction.atomic(savepoint=False), _DriverCursor() as cursor:
        tree = _lock_head(cursor)
        appended: list[Appended] = []
        entry_rows, node_rows = [], []
        for request, payload in zip(requests, payloads, strict=True):
            index = tree.size
            body = canonical_body(index, now, request, payload)
            leaf = merkle.leaf_hash(body)
            node_rows.extend((node_key(level, pos), digest) for (level, pos), digest in tree.append(leaf))
            entry_rows.append(_entry_row(index, body, leaf, adapt(now), request))
            appended.append(Appended(index=index, leaf_hash=leaf, body=body))
        cursor.executemany(_INSERT_ENTRY, entry_rows)
        cursor.executemany(
            "INSERT INTO ledger_entryscope (entry_index, project_id) VALUES (%s, %s)",
            [(item.index, project) for item, project in zip(appended, projects, strict=True)],
        )
        _write_tree(cursor, tree, node_rows)
    return appended


_INSERT_ENTRY = (
    'INSERT INTO ledger_entry ("index", body, leaf_hash, created_at, action, actor_id, actor_name, '
    "subject_type, subject_id, request_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _entry_row(index: int, body: bytes, leaf: bytes, created_at: Any, request: AppendRequest) -> tuple[Any, ...]:
    subject = request.subject
    return (
        index, body, leaf, created_at, request.action, request.actor.id[:64], request.actor.name[:150],
        subject.type[:64] if subject else "", subject.id[:128] if subject else "", (request.request_id or "")[:128],
    )  # fmt: skip


def _write_tree(cursor: Any, tree: merkle.CompactRange, node_rows: list[tuple[int, bytes]]) -> None:
    if node_rows:
        cursor.executemany('INSERT INTO ledger_node ("key", hash) VALUES (%s, %s)', node_rows)
    cursor.execute("UPDATE ledger_ledgerhead SET size = %s, frontier = %s WHERE id = 1", [tree.size, tree.encode()])


# --- Deferred sequencing (PostgreSQL) ---------------------------------------------------------------
#
# The append takes its indexes from a sequence and holds a transaction-scoped advisory lock on each
# until its transaction ends: no lock is shared between writers, so commits (and their fsyncs) of
# concurrent governed changes overlap. An index whose transaction rolled back is never written; the
# integrator sees the hole, takes the index's advisory lock (free once that transaction has ended),
# and fills it with a ``ledger.index_void`` entry, so the tree stays gapless.

INDEX_SEQUENCE = "ledger_entry_index_seq"
INDEX_LOCK_BASE = 0x4C44_0000_0000_0000  # advisory-lock keys of reserved indexes: base + index
VOID_ACTION = "ledger.index_void"
VOID_ACTOR = Actor(id="ledger", name="ledger integrator")
_RESERVE_CHUNK = 1000  # rows per statement (PostgreSQL takes at most 65,535 parameters)


def _insert_new(cursor: Any, rows: list[tuple[Any, ...]], projects: list[int | None]) -> set[int]:
    """Insert entries whose index no row holds yet, with their scope rows, in one statement;
    returns the indexes written (an index a row already holds is skipped, not an error)."""
    written: set[int] = set()
    for start in range(0, len(rows), _RESERVE_CHUNK):
        chunk, scopes_chunk = rows[start : start + _RESERVE_CHUNK], projects[start : start + _RESERVE_CHUNK]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
        scope_values = ", ".join(["(%s::bigint, %s::bigint)"] * len(chunk))
        params = [value for row in chunk for value in row]
        params += [value for row, project in zip(chunk, scopes_chunk, strict=True) for value in (row[0], project)]
        sql = (
            f'WITH e AS ({_INSERT_ENTRY.partition(" VALUES")[0]} VALUES {values} ON CONFLICT ("index") DO NOTHING '  # noqa: S608
            'RETURNING "index") INSERT INTO ledger_entryscope (entry_index, project_id) SELECT e."index", s.p FROM e '
            f'JOIN (VALUES {scope_values}) AS s(i, p) ON s.i = e."index" RETURNING entry_index'
        )
        cursor.execute(sql, params)  # only placeholders are formatted in: the values are parameters
        written.update(int(row[0]) for row in cursor.fetchall())
    return written


_RECORD = f"""
WITH r AS MATERIALIZED (
    SELECT v, row_number() OVER (ORDER BY v) AS k, pg_advisory_xact_lock(%s + v) AS locked
    FROM (SELECT nextval('{INDEX_SEQUENCE}') AS v FROM generate_series(1, %s)) AS taken
), d (k, head, tail, created_at, action, actor_id, actor_name, subject_type, subject_id, request_id, project) AS (
    VALUES {{values}}
), b AS MATERIALIZED (
    SELECT r.v, d.*, d.head || convert_to(r.v::text, 'UTF8') || d.tail AS body FROM r JOIN d USING (k)
), e AS (
    INSERT INTO ledger_entry ("index", body, leaf_hash, created_at, action, actor_id, actor_name, subject_type,
                              subject_id, request_id)
    SELECT v, body, sha256('\\x00'::bytea || body), created_at, action, actor_id, actor_name, subject_type,
           subject_id, request_id FROM b
    ON CONFLICT ("index") DO NOTHING RETURNING "index"
), s AS (
    INSERT INTO ledger_entryscope (entry_index, project_id) SELECT e."index", b.project FROM e JOIN b ON b.v = e."index"
)
SELECT b.k, b.v, e."index" IS NOT NULL FROM b LEFT JOIN e ON e."index" = b.v
"""  # noqa: S608 (constants only; the values are parameters)
_RECORD_ROW = "(%s::bigint, %s::bytea, %s::bytea, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s::bigint)"
_INDEX_MARK = b',"index":0,"payload":'


def _record_deferred(
    cursor: Any, requests: list[AppendRequest], payloads: list[bytes], projects: list[int | None], now: datetime
) -> dict[int, Appended]:
    """Take indexes for ``requests`` and record them, in one statement: the sequence gives the
    indexes (in ascending order, in the requests' order), each is locked for the transaction, and
    the database assembles each entry's bytes around its index and hashes them. Returns, by
    position, the entries written; an index a row already held leaves its request out."""
    created_at = connection.ops.adapt_datetimefield_value(now)
    params: list[Any] = [INDEX_LOCK_BASE, len(requests)]
    parts = []
    for k, (request, payload, project) in enumerate(zip(requests, payloads, projects, strict=True), start=1):
        head, _, tail = canonical_body(0, now, request, payload).partition(_INDEX_MARK)
        head, tail = head + b',"index":', b',"payload":' + tail
        parts.append((head, tail))
        row = _entry_row(0, b"", b"", created_at, request)
        params += [k, head, tail, created_at, *row[4:], project]
    cursor.execute(_RECORD.format(values=", ".join([_RECORD_ROW] * len(requests))), params, prepare=True)
    written = {}
    for k, index, inserted in cursor.fetchall():
        if inserted:
            head, tail = parts[k - 1]
            body = head + b"%d" % index + tail
            written[k - 1] = Appended(index=int(index), leaf_hash=merkle.leaf_hash(body), body=body)
    return written


def _append_deferred(
    requests: Sequence[AppendRequest], payloads: list[bytes], projects: list[int | None], now: datetime
) -> list[Appended]:
    import psycopg

    appended: dict[int, Appended] = {}
    todo = list(range(len(requests)))
    # The record statement goes through a cursor that binds on the server, and is prepared once
    # per connection and number of entries: PostgreSQL plans it in about 0.5 ms, longer than it
    # takes to run, and every governed change would plan it again. Django's own cursors bind on
    # the client, which cannot prepare.
    with (
        transaction.atomic(savepoint=False),
        connection.cursor() as cursor,
        psycopg.Cursor(connection.connection) as prepared,
    ):
        while todo:
            for start in range(0, len(todo), _RESERVE_CHUNK):
                chunk = todo[start : start + _RESERVE_CHUNK]
                written = _record_deferred(
                    prepared, [requests[p] for p in chunk], [payloads[p] for p in chunk], [projects[p] for p in chunk],
                    now,
                )  # fmt: skip
                appended.update((chunk[k], item) for k, item in written.items())
            todo = [position for position in todo if position not in appended]
            if todo:  # indexes an inline append took, or that the integrator voided: move past them
                cursor.execute(
                    f"SELECT setval('{INDEX_SEQUENCE}', GREATEST(nextval('{INDEX_SEQUENCE}'), "  # noqa: S608
                    'COALESCE((SELECT MAX("index") + 1 FROM ledger_entry), 0)))'
                )
    return [appended[position] for position in range(len(requests))]


def _attribute(requests: Sequence[AppendRequest]) -> list[int | None]:
    """The project of each entry (``None``: the organisation's), from its subject, asked once
    per subject (``audits.ledger.scopes``)."""
    found: dict[tuple[str, str], int | None] = {}
    projects = []
    for request in requests:
        subject = request.subject
        if subject is None:
            projects.append(None)
            continue
        key = (subject.type, subject.id)
        if key not in found:
            found[key] = scopes.subject_project(subject.type, subject.id)
        projects.append(found[key])
    return projects


def ledger_append(
    *,
    actor: Any,
    action: str,
    subject: Subject | None = None,
    payload: Any = None,
    policy_hash: str | None = None,
    request_id: str | None = None,
) -> Appended:
    """Append one entry. Call it inside the transaction of the change it records.

    ``payload`` must be JSON (no floats outside IEEE doubles' exact range, no bytes) and hold no
    personal data in clear: seal such values with ``vault_seal`` first. The request id defaults
    to the current request's or task's.
    """
    request = AppendRequest(
        actor=Actor.of(actor),
        action=action,
        subject=subject,
        payload=payload,
        policy_hash=policy_hash,
        request_id=request_id if request_id is not None else get_request_id(),
    )
    return ledger_append_many([request])[0]


# --- Checkpoints ---------------------------------------------------------------------------------


def _append_to_checkpoint_log(path: Path, tree_size: int, note: str, created_at: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"tree_size": tree_size, "created_at": created_at.isoformat(), "note": note}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_logged_checkpoint(path: Path) -> tuple[str, datetime] | None:
    """The note and time of the checkpoint log's last line (``None`` for an empty log). A last
    line without its newline is a write the crash of its signer cut short; its checkpoint never
    committed (the line is written first), so it is cut off before anything is appended after it.
    Call with the ledger head locked: signers append one at a time under that lock."""
    if not path.exists():
        return None
    with path.open("rb+") as log:
        end = log.seek(0, os.SEEK_END)
        start = max(0, end - 65536)  # a note with a few signatures is well under 1 KiB
        log.seek(start)
        tail = log.read()
        if tail and not tail.endswith(b"\n"):
            keep = start + tail.rfind(b"\n") + 1
            logger.warning("the checkpoint log %s ended in a partly written line: cut at byte %s", path, keep)
            log.truncate(keep)
            os.fsync(log.fileno())
            tail = tail[: keep - start]
    lines = [line for line in tail.split(b"\n") if line.strip()]
    if not lines:
        return None
    try:
        record = json.loads(lines[-1])
        return record["note"], datetime.fromisoformat(record["created_at"])
    except (ValueError, KeyError, TypeError):
        raise LedgerIntegrityError(
            f"refusing to sign: the last line of the checkpoint log {path} is not a checkpoint record"
        ) from None


def _adopt_logged_checkpoint(
    tree: merkle.CompactRange, last: Checkpoint | None, signers: Sequence[Any]
) -> Checkpoint | None:
    """Record the checkpoint that the log's last line holds and the database does not: its signer
    stopped after the line's fsync and before the row's commit. It is adopted only if it verifies
    under a known key and its root is the tree's at its size (from the stored subtree hashes),
    consistent with the last checkpoint row; otherwise ``LedgerIntegrityError``, nothing signed."""
    from audits.ledger.selectors import consistency_proof_with_roots

    logged = _last_logged_checkpoint(settings.LEDGER_CHECKPOINT_LOG)
    if logged is None or (last is not None and last.note == logged[0]):
        return None
    text, created_at = logged
    if Checkpoint.objects.filter(note=text).exists():
        return None
    log = settings.LEDGER_CHECKPOINT_LOG
    refuse = f"refusing to sign: the last line of the checkpoint log {log} is not in the database and "
    # Trusted keys only (configuration): a key published in the database proves nothing about the log.
    from audits.ledger.verification import trusted_verifiers

    try:
        verifiers = [*(signer.verifier() for signer in signers), *trusted_verifiers()]
    except KeyFileError as exc:
        raise LedgerIntegrityError(f"{refuse}the trusted keys cannot be read ({exc})") from None
    try:
        logged_checkpoint = notes.verify(text, verifiers, origin=settings.LEDGER_ORIGIN)
    except notes.NoteError as exc:
        raise LedgerIntegrityError(f"{refuse}does not verify ({exc})") from None
    size, root = logged_checkpoint.size, logged_checkpoint.root
    if size > tree.size or (last is not None and size < last.tree_size):
        raise LedgerIntegrityError(f"{refuse}its size {size} lies outside {last.tree_size if last else 0}..{tree.size}")
    if size:
        _, stored_root, _ = consistency_proof_with_roots(size, tree.size)
    else:
        stored_root = merkle.EMPTY_ROOT
    consistent = stored_root == root
    if consistent and last is not None and last.tree_size:
        proof, _, _ = consistency_proof_with_roots(last.tree_size, size)
        try:
            merkle.verify_consistency(last.tree_size, size, bytes(last.root), root, proof)
        except merkle.ProofError:
            consistent = False
    if not consistent:
        raise LedgerIntegrityError(f"{refuse}its root at size {size} is not the stored tree's")
    for signer in signers:
        PublishedKey.objects.get_or_create(
            verifier=signer.verifier().encode(),
            defaults={"name": signer.name, "key_id": signer.key_id.hex(), "first_used_at": created_at},
        )
    logger.warning(
        "checkpoint of size %s was in the checkpoint log but not in the database (its signer stopped "
        "before committing): recorded from the log",
        size,
    )
    return Checkpoint.objects.create(tree_size=size, root=root, note=text, created_at=created_at)


def checkpoint_create(*, force: bool = False) -> Checkpoint | None:
    """Sign a checkpoint of the current tree when it has grown since the last one (or ``force``).

    Before signing, proves the current tree consistent with the last checkpoint from the stored
    subtree hashes; if it is not, raises ``LedgerIntegrityError`` and signs nothing. The note is
    appended (and fsynced) to ``LEDGER_CHECKPOINT_LOG`` outside the database before the row
    commits, so that file always holds every checkpoint; a checkpoint whose signer stopped between
    the two is recorded from the log first (``_adopt_logged_checkpoint``). Returns the checkpoint
    signed, or the one recorded from the log, or ``None``.
    """
    from audits.ledger.selectors import consistency_proof, head_tree

    try:
        signers = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)
    except KeyFileError as exc:
        raise LedgerError("signing_key_unavailable", str(exc)) from None
    if settings.LEDGER_SEQUENCING == "deferred" and connection.vendor == "postgresql":
        from audits.ledger.integrator import integrate_all

        integrate_all()  # sign what has committed so far
    with transaction.atomic():
        tree = head_tree(lock=True)
        last = Checkpoint.objects.order_by("-tree_size", "-id").first()
        adopted = _adopt_logged_checkpoint(tree, last, signers)
        last = adopted or last
        if not force and (tree.size == 0 or (last is not None and last.tree_size == tree.size)):
            return adopted
        root = tree.root()
        if last is not None:
            if tree.size < last.tree_size:
                raise LedgerIntegrityError(f"the tree has {tree.size} entries, fewer than checkpoint {last.tree_size}")
            try:
                proof = consistency_proof(last.tree_size, tree.size) if last.tree_size else []
                if last.tree_size:
                    merkle.verify_consistency(last.tree_size, tree.size, bytes(last.root), root, proof)
            except merkle.ProofError as exc:
                raise LedgerIntegrityError(
                    f"refusing to sign: size {tree.size} is not consistent with checkpoint {last.tree_size} ({exc})"
                ) from None
        note = notes.sign(notes.Checkpoint(origin=settings.LEDGER_ORIGIN, size=tree.size, root=root), signers)
        now = timezone.now()
        for signer in signers:
            PublishedKey.objects.get_or_create(
                verifier=signer.verifier().encode(),
                defaults={"name": signer.name, "key_id": signer.key_id.hex(), "first_used_at": now},
            )
        checkpoint = Checkpoint.objects.create(tree_size=tree.size, root=root, note=note, created_at=now)
        _append_to_checkpoint_log(settings.LEDGER_CHECKPOINT_LOG, tree.size, note, now)
    return checkpoint


# --- The vault: personal data sealed per data subject ---------------------------------------------


def _check_ref(subject_ref: str) -> None:
    if not _SUBJECT_REF.match(subject_ref):
        raise LedgerError("invalid_subject_ref", "a data-subject reference is 8-64 of [A-Za-z0-9_.:-]")


def vault_seal(*, subject_ref: str, value: Any) -> dict[str, str]:
    """Encrypt ``value`` under the data subject's key (made on first use); returns the sealed form
    to put in a ledger payload. Refuses a subject whose data was erased."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    _check_ref(subject_ref)
    try:
        plaintext = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise LedgerError("payload_not_json", f"the sealed value is not JSON-serialisable: {exc}") from None
    # Refusals come before any write, so they leave the caller's transaction usable.
    row, key, created = DataSubjectKey.objects.filter(ref=subject_ref).first(), b"", False
    if row is None:
        key = AESGCM.generate_key(bit_length=256)
        wrapped, kek_id = _vault_kek(kek.key_wrap, key)
        row, created = DataSubjectKey.objects.get_or_create(
            ref=subject_ref, defaults={"key": wrapped, "kek_id": kek_id, "created_at": timezone.now()}
        )
    if row.key is None:
        raise Conflict("subject_erased", f"the data of subject {subject_ref} was erased; nothing new is sealed")
    if not created:  # an existing key, or one made at the same moment by another seal
        key = _vault_kek(kek.key_unwrap, bytes(row.key), row.kek_id)
    nonce = os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, subject_ref.encode())
    return {
        SEALED_MARK: "aes-256-gcm",
        "subject": subject_ref,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }


def _vault_kek(operation: Any, *args: Any) -> Any:
    """A KEK operation; a KEK that cannot be had is a 503 naming the setting, never a 500."""
    try:
        return operation(*args)
    except kek.KekError as exc:
        raise LedgerError("vault_kek_unavailable", f"the vault's key-encryption key: {exc}", status_code=503) from None


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and SEALED_MARK in value


def vault_open(sealed: dict[str, str]) -> Any:
    """The clear value of a sealed field, or ``ERASED`` once its subject's key is destroyed."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    row = DataSubjectKey.objects.filter(ref=sealed["subject"]).first()
    if row is None or row.key is None:
        return ERASED
    key = _vault_kek(kek.key_unwrap, bytes(row.key), row.kek_id)
    plaintext = AESGCM(key).decrypt(
        base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]), sealed["subject"].encode()
    )
    return json.loads(plaintext)


def data_subject_erase(*, actor: Any, subject_ref: str, reason: str) -> Appended:
    """Crypto-shred a data subject (GDPR Art. 17): destroy the key, record the erasure.

    The row's wrapped key is destroyed (set NULL); its KEK is not needed and stays as it is, so
    an erasure works with the KEK unreachable, and no KEK rotation can bring the key back.

    Every entry that holds the subject's sealed data keeps its bytes, so every hash, proof and
    checkpoint still verifies; the sealed values can no longer be read by any path. The erasure is
    also appended to the erasure journal (``LEDGER_ERASURE_JOURNAL``), which every restore
    re-applies (``audits/ledger/backup/journal.py``). On SQLite
    freed pages are overwritten (``secure_delete``) and, after commit, the write-ahead log is
    checkpointed into the database file and emptied (``sqlite_wal_purge``), which removes the
    key's old page from both files. A read transaction held open elsewhere (a long export, say)
    keeps that from completing: the erasure then waits up to ``WAL_PURGE_WAIT_S``, logs a
    warning if the reader is still there, and the periodic ``ledger.checkpoint`` task completes
    the purge at its next run after the reader ends.
    """
    _check_ref(subject_ref)
    if not reason.strip():
        raise LedgerError("invalid_input", "an erasure needs a reason", fields={"reason": ["may not be blank"]})
    with transaction.atomic():
        row = DataSubjectKey.objects.select_for_update().filter(ref=subject_ref).first()
        if row is None:
            raise LedgerError("unknown_subject", f"the vault holds no key for subject {subject_ref}", status_code=404)
        if row.key is None:
            raise Conflict("already_erased", f"subject {subject_ref} was already erased on {row.erased_at:%Y-%m-%d}")
        erased_at = timezone.now()
        DataSubjectKey.objects.filter(pk=row.pk).update(key=None, erased_at=erased_at)
        appended = ledger_append(
            actor=actor,
            action="ledger.data_subject.erased",
            subject=Subject(type="data_subject", id=subject_ref),
            payload={"reason": reason},
        )
        # Outside the database and its backups, before the commit: every restore erases again.
        from audits.ledger.backup.journal import journal_append

        journal_append(subject_ref=subject_ref, erased_at=erased_at, entry=appended.index)
        if connection.vendor == "sqlite":
            transaction.on_commit(lambda: _purge_after_erasure(subject_ref))
    return appended


def _purge_after_erasure(subject_ref: str) -> None:
    if not sqlite_wal_purge():
        logger.warning(
            "erasure of data subject %s: the SQLite write-ahead log could not be checkpointed within %s s "
            "because a read transaction is open; until a checkpoint completes, the erased key's old page "
            "remains in %s and its -wal file. The periodic ledger.checkpoint task retries every %s s.",
            subject_ref, WAL_PURGE_WAIT_S, connection.settings_dict["NAME"], settings.LEDGER_CHECKPOINT_EVERY_S,
        )  # fmt: skip


def sqlite_wal_purge(*, wait_s: float = WAL_PURGE_WAIT_S) -> bool:
    """SQLite: copy every committed page from the write-ahead log into the database file and empty
    the log (``PRAGMA wal_checkpoint(TRUNCATE)``), so no older version of a page (an erased key's
    among them) is left in either file. Returns whether that completed; True at once on other
    databases.

    An open read transaction of another connection keeps the pages it may still read, so the
    checkpoint cannot complete until it ends: this tries again for ``wait_s`` seconds, each try
    holding new writers back for at most ``_WAL_PURGE_TRY_MS``. Inside a transaction nothing can
    be checkpointed past it: returns False without trying.
    """
    if connection.vendor != "sqlite":
        return True
    if connection.in_atomic_block:
        return False
    deadline = time.monotonic() + wait_s
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        configured = int(cursor.fetchone()[0])
        cursor.execute(f"PRAGMA busy_timeout = {_WAL_PURGE_TRY_MS}")
        try:
            while True:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                busy = cursor.fetchone()[0]  # (busy, frames in the log, frames checkpointed)
                if not busy:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {configured}")
