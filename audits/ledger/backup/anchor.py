"""The trust anchor of a restore: the checkpoint log kept off-site, and the verification of the
restored ledger against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from audits.ledger import notes
from audits.ledger.backup.layout import BackupError
from audits.ledger.keys import VerifierKey


@dataclass(frozen=True)
class Anchor:
    """The checkpoints the restore verifies against: (line number, size) of each, and the file."""

    path: Path
    sizes: list[tuple[int, int]]


def anchor_read(path: Path, trusted: list[VerifierKey] | None = None) -> Anchor:
    """The checkpoints of the off-site file ``path``; with ``trusted``, each must also be signed by
    one of those keys for this ledger's origin (``BackupError`` names the line and the keys)."""
    if not path.is_file():
        raise BackupError(f"the checkpoint file {path} does not exist")
    sizes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["note"]
            parsed, _ = notes.parse(text)
        except (ValueError, KeyError, TypeError, notes.NoteError):
            raise BackupError(f"{path}, line {number}: not a signed checkpoint record") from None
        if trusted is not None:
            untrusted_signature(text, trusted, f"{path}, line {number}")
        sizes.append((number, parsed.size))
    if not sizes:
        raise BackupError(f"the checkpoint file {path} holds no checkpoint: nothing outside the database vouches")
    return Anchor(path=path, sizes=sizes)


def untrusted_signature(text: str, trusted: list[VerifierKey], where: str) -> None:
    """Refuse a checkpoint note not signed by a trusted key for this ledger's origin, naming the
    keys that did sign it and the flag that says which keys to trust."""
    try:
        notes.verify(text, trusted, origin=settings.LEDGER_ORIGIN)
    except notes.NoteError as exc:
        try:
            checkpoint, signatures = notes.parse(text)
        except notes.NoteError:
            raise BackupError(f"{where}: not a signed checkpoint ({exc})") from None
        signers = ", ".join(f"{sig.name}+{sig.key_id.hex()}" for sig in signatures)
        raise BackupError(
            f"{where}: the checkpoint (origin {checkpoint.origin}) is signed by {signers}, which this service does "
            f"not trust ({exc}): another organisation's ledger, or a key this machine was never told about. "
            "Trusted keys are LEDGER_TRUSTED_KEYS_FILE and the signing key's public half; to restore it anyway, "
            "pass --trust-keys FILE naming the verifier keys to trust (take them from your key records, not "
            "from the backup)"
        ) from None


def _anchor_for(anchor: Anchor, tree_size: int, accept_loss: bool, workdir: Path) -> tuple[Path, list[str]]:
    """The anchor file to verify against: checkpoints signed after the backup (larger than its
    tree) cannot be checked against it; by default they refuse the restore, with ``accept_loss``
    they are left out (lines blanked, so line numbers in messages stay those of the file)."""
    newer = [(line, size) for line, size in anchor.sizes if size > tree_size]
    if not newer:
        return anchor.path, []
    largest = max(size for _, size in newer)
    message = (
        f"the off-site checkpoints go up to tree size {largest} (line {newer[-1][0]} of {anchor.path}); this backup "
        f"holds {tree_size} entries: entries {tree_size}..{largest - 1}, signed after the backup, are not in it"
    )
    if not accept_loss:
        raise BackupError(
            f"{message}. Restore a newer backup, or pass --accept-loss-after-backup to restore this one anyway"
        )
    blank = {line for line, _ in newer}
    lines = anchor.path.read_text(encoding="utf-8").splitlines()
    filtered = workdir / "anchor.jsonl"
    filtered.write_text("".join(("" if n in blank else text) + "\n" for n, text in enumerate(lines, start=1)))
    return filtered, [f"DATA LOSS: {message}"]


def _verify_against(anchor_file: Path, backup_log: Path | None, trusted_file: Path) -> Any:
    """``ledger verify`` with the checkpoint log replaced by ``anchor_file`` and the trusted keys by
    ``trusted_file``, then the backup's own log checked to be part of the restored database (what
    ``ledger verify`` will read from now on), then the database against its ledger: no subject whose
    erasure the ledger records has its key back."""
    from audits.ledger.backup.journal import erased_keys_present
    from audits.ledger.models import Checkpoint
    from audits.ledger.replay import VerificationFailed
    from audits.ledger.verification import ledger_verify, read_checkpoint_log

    configured = settings.LEDGER_CHECKPOINT_LOG, settings.LEDGER_TRUSTED_KEYS_FILE
    settings.LEDGER_CHECKPOINT_LOG, settings.LEDGER_TRUSTED_KEYS_FILE = anchor_file, trusted_file
    try:
        result = ledger_verify()
    except VerificationFailed as failure:
        raise BackupError(f"the restored ledger does NOT verify against {anchor_file}: {failure}") from None
    finally:
        settings.LEDGER_CHECKPOINT_LOG, settings.LEDGER_TRUSTED_KEYS_FILE = configured
    if backup_log is not None:
        stored = set(Checkpoint.objects.values_list("note", flat=True))
        try:
            logged = read_checkpoint_log(backup_log)
        except VerificationFailed as failure:
            raise BackupError(f"the backup's checkpoint log: {failure}") from None
        for label, text in logged:
            if text not in stored:
                raise BackupError(f"the backup's checkpoint log, {label}: this checkpoint is missing from its database")
    present = erased_keys_present()
    if present:
        raise BackupError(
            f"the backup's database holds the vault key of {len(present)} data subject(s) whose erasure its own "
            f"ledger records ({', '.join(present[:3])}): the database was changed around the service"
        )
    return result
