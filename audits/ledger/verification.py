"""Full verification of the stored ledger (``python manage.py ledger verify``).

Re-hashes every stored entry, rebuilds the roots, checks every checkpoint's signatures (those in
the database and those in the checkpoint log outside it), checks each consistency step between
checkpoints with proofs built from the stored subtree hashes (the ones served to clients), and
checks the head. The outcome is recorded as a ``VerificationRun`` for the admin.

A signature counts only under a trusted key (``trusted_verifiers``: configuration outside the
database); a key published in the database and not trusted is named, never used.

The service keeps appending and signing while a verification runs, and no one read sees the
database and the checkpoint log at the same moment; so the reads go in an order in which an append
or a checkpoint made meanwhile cannot look like tampering: the checkpoint rows, then the log (each
line is written before its row commits, so the log holds at least those rows), then the head (it
only grows, so it covers every checkpoint read), then the entries below the head's size only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import suppress
from itertools import pairwise
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audits.ledger import merkle, notes
from audits.ledger.keys import KeyFileError, VerifierKey, load_signer_keys, load_verifier_keys
from audits.ledger.models import Checkpoint, PublishedKey, VerificationRun
from audits.ledger.replay import ReplayResult, Segmented, VerificationFailed, check_notes, replay
from audits.ledger.selectors import consistency_proof, fetch_nodes, head_tree
from audits.ledger.services import INDEX_SEQUENCE, LedgerIntegrityError
from audits.ledger.witness.verify import check_quorum, witnessed_notes

CHUNK = 20_000
SEGMENT_MIN = 65_536  # entries a process replays at least, when a full replay is split


def trusted_verifiers() -> list[VerifierKey]:
    """The verifier keys verification trusts, all from configuration outside the database: those
    in ``LEDGER_TRUSTED_KEYS_FILE`` and the public half of every key in the signing key file (whoever
    provisioned the private key vouches for it). Keys published in the database are not trusted on
    their own: that database is what they would check. Raises ``KeyFileError`` for a malformed
    trusted keys file (a missing one is allowed: the signing key's half is enough out of the box)."""
    keys: set[VerifierKey] = set()
    path = Path(settings.LEDGER_TRUSTED_KEYS_FILE)
    if path.exists():
        keys.update(load_verifier_keys(path))
    try:
        keys.update(signer.verifier() for signer in load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE))
    except KeyFileError:
        pass  # a verifier's machine needs no private key: the trusted keys file is enough
    return sorted(keys, key=lambda k: (k.name, k.key_id))


def known_verifiers() -> list[VerifierKey]:
    """The keys a checkpoint must be signed by to count: ``trusted_verifiers()`` (the name is the
    one report verification has always called)."""
    return trusted_verifiers()


def untrusted_published_keys(trusted: list[VerifierKey] | None = None) -> list[str]:
    """The verifier keys published in the database (keys that signed checkpoints there) that are
    not among the trusted ones: a key rotated in without ``ledger rotate-key`` on this machine, or
    one written into the table by whoever changed the database."""
    encoded = {key.encode() for key in (trusted if trusted is not None else trusted_verifiers())}
    return sorted(v for v in PublishedKey.objects.values_list("verifier", flat=True) if v not in encoded)


def explain_untrusted(failure: VerificationFailed, untrusted: list[str]) -> VerificationFailed:
    """``failure`` with its reason completed when a checkpoint failed for want of a trusted
    signature: which keys the database holds that the configuration does not trust."""
    if "no signature by a known key" not in failure.why:
        return failure
    where = settings.LEDGER_TRUSTED_KEYS_FILE
    if untrusted:
        ids = ", ".join(line.split("+")[1] for line in untrusted)
        why = (
            f"no signature by a trusted key: it is signed by key(s) {ids}, published in the database but not "
            f"among the trusted keys ({where} and the signing key's public half)"
        )
    else:
        why = f"no signature by a trusted key ({where} and the signing key's public half)"
    return VerificationFailed(failure.where, why)


def read_checkpoint_log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            texts.append((f"checkpoint log line {number}", json.loads(line)["note"]))
        except (ValueError, KeyError, TypeError):
            raise VerificationFailed(f"checkpoint log line {number}", "not a checkpoint record") from None
    return texts


def stream_entries(below: int | None = None, start: int = 0) -> Iterator[tuple[int, bytes, bytes | None]]:
    """Every entry in index order (only those with ``start <= index < below`` when given),
    straight from the DB-API cursor in chunks: the ORM would build a model instance per row, and
    verification time grows with the log."""
    mark = "?" if connection.vendor == "sqlite" else "%s"  # the raw DB-API cursor's paramstyle
    sql, params = f'SELECT "index", body, leaf_hash FROM ledger_entry WHERE "index" >= {mark}', [start]  # noqa: S608
    if below is not None:
        sql, params = sql + f' AND "index" < {mark}', [start, below]
    sql += ' ORDER BY "index"'
    connection.ensure_connection()
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, params)
        if connection.vendor == "sqlite":  # BLOBs arrive as bytes already
            while rows := cursor.fetchmany(CHUNK):
                yield from rows
        else:  # bytea arrives as memoryview
            while rows := cursor.fetchmany(CHUNK):
                for index, body, leaf in rows:
                    yield index, bytes(body), bytes(leaf)
    finally:
        with suppress(connection.Database.Error):  # closed already, with its connection (before a fork)
            cursor.close()


def _wait_for_writers() -> None:
    """Return once the write transactions under way have ended. A checkpoint's log line is written
    while its transaction, which holds the head lock, is still open: taking the lock (PostgreSQL
    ``FOR UPDATE``; on SQLite ``BEGIN IMMEDIATE`` takes the write lock) waits for it to commit."""
    with transaction.atomic():
        head_tree(lock=True)


def checkpoints_then_log() -> tuple[list[Checkpoint], list[tuple[str, str]]]:
    """The checkpoint rows and the checkpoint log, read so that a checkpoint signed meanwhile is
    not taken for one missing from the database: rows first, then the log (which holds the line
    of every row already, absent tampering); a logged checkpoint not among the rows was being
    signed while they were read, so the rows are read again once its transaction has ended. A
    logged checkpoint still missing then is a fault for the caller to report."""
    rows = list(Checkpoint.objects.order_by("tree_size", "id"))
    logged = read_checkpoint_log(settings.LEDGER_CHECKPOINT_LOG)
    if not {text for _, text in logged} <= {row.note for row in rows}:
        _wait_for_writers()
        rows = list(Checkpoint.objects.order_by("tree_size", "id"))
    return rows, logged


def _stored_range(size: int) -> merkle.CompactRange:
    """The tree's right edge at ``size``, from the stored subtree hashes (``log2(size)`` of them)."""
    keys, offset = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            keys.append((level, offset >> level))
            offset += 1 << level
    found = fetch_nodes(set(keys))
    return merkle.CompactRange(size, [found[key] for key in keys])


def _anchor(rows: list[Checkpoint], verifiers: list[VerifierKey]) -> merkle.CompactRange | None:
    """Where an incremental verification starts: the last checkpoint that the latest verification
    (which passed) covered, its tree's right edge rebuilt from the stored subtree hashes and held
    against the checkpoint's signed root. ``None`` (verify everything) when there is no such run."""
    last = VerificationRun.objects.order_by("-finished_at", "-id").first()
    if last is None or not last.ok:
        return None
    covered = [row for row in rows if 0 < row.tree_size <= last.tree_size]
    if not covered:
        return None
    row = covered[-1]
    try:
        signed = notes.verify(row.note, verifiers, origin=settings.LEDGER_ORIGIN)
    except notes.NoteError as exc:
        raise VerificationFailed(f"checkpoint {row.pk}", str(exc)) from None
    try:
        start = _stored_range(signed.size)
    except merkle.ProofError as exc:
        raise VerificationFailed(f"checkpoint {row.pk}", f"the stored tree at its size: {exc}") from None
    if start.root() != signed.root:
        raise VerificationFailed(
            f"checkpoint {row.pk}", "the stored subtree hashes at its size do not give its signed root"
        )
    return start


def _from_size(texts: list[tuple[str, str]], size: int) -> list[tuple[str, str]]:
    """The notes of checkpoints of ``size`` entries or more (a note that does not parse is kept, to
    be reported)."""
    kept = []
    for label, text in texts:
        try:
            parsed, _ = notes.parse(text)
        except notes.NoteError:
            kept.append((label, text))
            continue
        if parsed.size >= size:
            kept.append((label, text))
    return kept


def _verify(progress: Callable[[int], None] | None, incremental: bool = False) -> ReplayResult:
    if settings.LEDGER_SEQUENCING == "deferred":
        from audits.ledger.integrator import integrate_all

        try:
            integrate_all()  # verify what has committed so far
        except LedgerIntegrityError as exc:
            raise VerificationFailed("integration", str(exc)) from None
    rows, logged = checkpoints_then_log()
    try:
        verifiers = trusted_verifiers()
    except KeyFileError as exc:
        raise VerificationFailed("trusted keys", str(exc)) from None
    if not verifiers:
        raise VerificationFailed(
            "trusted keys",
            f"no trusted verifier key: {settings.LEDGER_TRUSTED_KEYS_FILE} is missing and there is no signing key "
            "(`ledger keygen --if-missing` writes the signing key's public half there)",
        )
    # Co-signed checkpoints (each row keeps the note its witness co-signed), read before the head:
    # their roots are held against the entries with the others', and the witness policy after.
    witnessed = witnessed_notes()
    # Read after every checkpoint: the head only grows, so its size covers them all. Entries
    # appended after this moment are left to the next verification.
    head = head_tree()
    stored = [(f"checkpoint {row.pk}", row.note) for row in rows] + witnessed
    for row in rows:
        try:
            parsed, _ = notes.parse(row.note)
        except notes.NoteError as exc:
            raise VerificationFailed(f"checkpoint {row.pk}", str(exc)) from None
        if parsed.size != row.tree_size or parsed.root != bytes(row.root):
            raise VerificationFailed(f"checkpoint {row.pk}", "its size or root columns differ from its signed note")
    in_database = {row.note for row in rows}
    for number, (label, text) in enumerate(logged, start=1):
        if text not in in_database:
            hint = (
                " (the log's last line: if its signer stopped before committing, the next checkpoint run records it)"
                if number == len(logged)
                else ""
            )
            raise VerificationFailed(label, f"this signed checkpoint is missing from the database{hint}")
    if rows and not logged:
        raise VerificationFailed(
            str(settings.LEDGER_CHECKPOINT_LOG), "the checkpoint log outside the database is missing"
        )
    # Incremental: from the last checkpoint a passing verification covered; only what follows it
    # (entries, checkpoints, consistency steps) is checked again.
    start = _anchor(rows, verifiers) if incremental else None
    since = start.size if start else 0
    try:
        signed = check_notes(_from_size(stored + logged, since), verifiers, settings.LEDGER_ORIGIN)
    except VerificationFailed as failure:
        raise explain_untrusted(failure, untrusted_published_keys(verifiers)) from None
    result = replay(
        lambda: stream_entries(below=head.size, start=since), signed, progress=progress, start=start,
        segmented=_segmented(head.size) if start is None else None,
    )  # fmt: skip
    check_quorum(witnessed, verifiers=verifiers)  # the k-of-n witness policy; a split view fails here

    sizes = sorted({s.checkpoint.size for s in signed if s.checkpoint.size > 0} | ({since} if since else set()))
    roots = {s.checkpoint.size: s.checkpoint.root for s in signed}
    if start is not None:
        roots[since] = start.root()
    for first, second in pairwise(sizes):
        try:
            proof = consistency_proof(first, second)
            merkle.verify_consistency(first, second, roots[first], roots[second], proof)
        except merkle.ProofError as exc:
            raise VerificationFailed(
                f"consistency from size {first} to {second}", f"{exc} (the stored subtree hashes were changed)"
            ) from None
    if head.size != result.tree_size or head.root() != result.root:
        raise VerificationFailed("ledger head", "its size or right edge disagrees with the entries")
    # Entries past the head's size at the start are appends made since, which moved the head on
    # (inline), or entries recorded and not integrated yet (deferred: below the index sequence);
    # rows past that bound were written around the service.
    with connection.cursor() as cursor:
        cursor.execute('SELECT MAX("index") FROM ledger_entry')
        (last,) = cursor.fetchone()
    if last is not None and last >= _index_bound():
        raise VerificationFailed(f"entry {last}", "it lies past the ledger head: written around the service")
    return result


def _segmented(size: int) -> Segmented | None:
    """A full replay in ``LEDGER_VERIFY_PROCESSES`` processes at once, each replaying at least
    ``SEGMENT_MIN`` entries; none inside a transaction, whose rows the children could not see."""
    processes = min(settings.LEDGER_VERIFY_PROCESSES, size // SEGMENT_MIN)
    if processes < 2 or connection.in_atomic_block:
        return None
    return Segmented(
        entries=lambda lo, hi: stream_entries(below=hi, start=lo), size=size, processes=processes,
        before_fork=connection.close,
    )  # fmt: skip


def _index_bound() -> int:
    """One past the highest index the service has given out: the head's size (inline), or the
    index sequence's next value (deferred sequencing, PostgreSQL)."""
    size = head_tree().size
    if connection.vendor != "postgresql":
        return size
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT last_value, is_called FROM {INDEX_SEQUENCE}")  # noqa: S608 (a constant)
        last_value, is_called = cursor.fetchone()
    return max(size, last_value + 1 if is_called else last_value)


def ledger_verify(*, progress: Callable[[int], None] | None = None, incremental: bool = False) -> ReplayResult:
    """Verify everything; raises ``VerificationFailed`` naming the first fault. Records the run.

    ``incremental``: start from the last checkpoint that the latest verification (which passed)
    covered, in time proportional to what came since; everything when there is no such run. Run
    the full verification as well, less often: the incremental one trusts the earlier run."""
    started = timezone.now()
    try:
        result = _verify(progress, incremental)
    except VerificationFailed as failure:
        VerificationRun.objects.create(
            started_at=started, finished_at=timezone.now(), ok=False, tree_size=head_tree().size,
            checkpoints_checked=0, failure=str(failure),
        )  # fmt: skip
        raise
    VerificationRun.objects.create(
        started_at=started, finished_at=timezone.now(), ok=True, tree_size=result.tree_size,
        checkpoints_checked=result.checkpoints_checked,
    )  # fmt: skip
    return result
