"""``ledger verify`` and ``ledger export`` on a live service: appends and checkpoints made while
they read raise no false alarm and break no bundle, and real tampering is still found.

The interleavings are forced: the write happens from inside the read (its progress callback, or
a wrapped read function), on the same connection, at the moment a concurrent one could."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from audits.ledger import export as export_module
from audits.ledger import triggers, verification
from audits.ledger.models import Checkpoint, VerificationRun
from audits.ledger.replay import VerificationFailed
from audits.ledger.services import checkpoint_create
from audits.ledger.tests.test_verify import export, verify_offline

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(append: Callable[..., object]) -> None:
    """23 entries, checkpoints at 10 and 20."""
    append(10)
    checkpoint_create()
    append(10)
    checkpoint_create()
    append(3)


def _append_and_sign(append: Callable[..., object]) -> None:
    append(2, action="test.meanwhile")
    checkpoint_create()


def test_an_append_and_a_checkpoint_during_the_replay_raise_no_alarm(
    ledger: None, append: Callable[..., object]
) -> None:
    written = []

    def progress(size: int) -> None:  # called once the entries are replayed, before the head is checked
        if not written:
            written.append(size)
            _append_and_sign(append)

    result = verification.ledger_verify(progress=progress)
    assert written == [23] and result.tree_size == 23
    assert VerificationRun.objects.get().ok
    assert verification.ledger_verify().tree_size == 25  # the next run covers what came meanwhile


def test_a_checkpoint_signed_between_the_database_and_the_log_reads_raises_no_alarm(
    ledger: None, append: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = verification.read_checkpoint_log

    def log_read_after_a_checkpoint(path: Path) -> list[tuple[str, str]]:
        _append_and_sign(append)
        monkeypatch.setattr(verification, "read_checkpoint_log", real)
        return real(path)

    monkeypatch.setattr(verification, "read_checkpoint_log", log_read_after_a_checkpoint)
    result = verification.ledger_verify()
    assert result.tree_size == 25 and result.checkpoints_checked == 6  # 3 in the database, 3 in the log
    assert VerificationRun.objects.get().ok


def test_a_checkpoint_row_deleted_is_still_found(ledger: None) -> None:
    triggers.drop_rollback_unsafe(connection)
    last = Checkpoint.objects.order_by("-tree_size").first()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ledger_checkpoint WHERE id = %s", [last.pk])
    with pytest.raises(VerificationFailed, match="checkpoint log line 2: this signed checkpoint is missing"):
        verification.ledger_verify()
    assert not VerificationRun.objects.get().ok


def test_entries_deleted_after_the_last_checkpoint_are_still_found(ledger: None) -> None:
    triggers.drop_rollback_unsafe(connection)
    with connection.cursor() as cursor:
        cursor.execute('DELETE FROM ledger_entry WHERE "index" >= 21')
    with pytest.raises(VerificationFailed, match="ledger head: its size or right edge disagrees"):
        verification.ledger_verify()


def test_an_entry_written_past_the_head_around_the_service_is_found(ledger: None) -> None:
    rest = "body, leaf_hash, created_at, action, actor_id, actor_name, subject_type, subject_id, request_id"
    with connection.cursor() as cursor:  # an INSERT, which the append-only triggers let through
        insert = f'INSERT INTO ledger_entry ("index", {rest}) SELECT 23, {rest} FROM ledger_entry WHERE "index" = 22'  # noqa: S608 (constant text)
        cursor.execute(insert)
    with pytest.raises(VerificationFailed, match="entry 23: it lies past the ledger head"):
        verification.ledger_verify()


def test_a_checkpoint_signed_while_entries_are_exported_leaves_a_bundle_that_verifies(
    ledger: None, append: Callable[..., object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_module.stream_entries

    def entries_then_a_checkpoint(*args: object, **kwargs: object) -> Iterator[tuple[int, bytes, bytes | None]]:
        yield from real(*args, **kwargs)  # type: ignore[arg-type]
        _append_and_sign(append)

    monkeypatch.setattr(export_module, "stream_entries", entries_then_a_checkpoint)
    bundle = export(tmp_path)
    assert Checkpoint.objects.order_by("-tree_size").first().tree_size == 25  # signed during the export
    code, output = verify_offline(bundle)
    assert code == 0, output
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["tree_size"] == 23 and manifest["checkpoints"] == 2  # the export's moment; 25 goes next time
