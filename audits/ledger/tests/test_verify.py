"""Checkpoints, full verification, export and the offline verifier, honest and tampered."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from audits.ledger import merkle, notes, triggers
from audits.ledger.keys import SignerKey, load_signer_keys
from audits.ledger.models import Checkpoint, Entry, VerificationRun
from audits.ledger.services import LedgerIntegrityError, checkpoint_create
from conftest import ROOT

pytestmark = pytest.mark.django_db


def verify_command() -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ledger", "verify", stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), err.getvalue()
    return 0, out.getvalue()


def verify_offline(bundle: Path, *keys: str) -> tuple[int, str]:
    """Run the offline verifier in a process where importing Django fails."""
    program = (
        "import runpy, sys; sys.modules['django'] = None; "
        f"sys.argv = ['audits.verify', {str(bundle)!r}] + {list(keys)!r}; "
        "runpy.run_module('audits.verify', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def export(tmp_path: Path, name: str = "bundle") -> Path:
    bundle = tmp_path / name
    call_command("ledger", "export", str(bundle), stdout=io.StringIO())
    return bundle


@pytest.fixture
def ledger(append: Callable[..., object]) -> None:
    """23 entries, checkpoints at 10 and 20, and 3 entries after the last checkpoint."""
    append(10)
    checkpoint_create()
    append(10)
    checkpoint_create()
    append(3)


def test_checkpoints_are_signed_logged_outside_the_database_and_not_repeated(append: Callable[..., object]) -> None:
    assert checkpoint_create() is None  # nothing to sign in an empty tree
    append(5)
    checkpoint = checkpoint_create()
    assert checkpoint is not None and checkpoint.tree_size == 5
    verifiers = [k.verifier() for k in load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)]
    assert notes.verify(checkpoint.note, verifiers, origin=settings.LEDGER_ORIGIN).size == 5
    assert checkpoint_create() is None  # the tree has not grown
    logged = [json.loads(line) for line in settings.LEDGER_CHECKPOINT_LOG.read_text().splitlines()]
    assert [(r["tree_size"], r["note"]) for r in logged] == [(5, checkpoint.note)]


def test_signing_is_refused_when_the_tree_contradicts_the_last_checkpoint(append: Callable[..., object]) -> None:
    append(4)
    checkpoint_create()
    append(3)
    with connection.cursor() as cursor:  # a history rewritten below the head: entries 0..3 differ
        cursor.execute("SELECT frontier FROM ledger_ledgerhead WHERE id = 1")
        frontier = bytes(cursor.fetchone()[0])
        cursor.execute("UPDATE ledger_ledgerhead SET frontier = %s WHERE id = 1", [b"\x00" * 32 + frontier[32:]])
    with pytest.raises(LedgerIntegrityError, match="refusing to sign: size 7 is not consistent with checkpoint 4"):
        checkpoint_create()
    assert Checkpoint.objects.count() == 1


def test_honest_ledger_verifies_on_the_server_and_offline(ledger: None, tmp_path: Path) -> None:
    code, output = verify_command()
    assert code == 0, output
    assert "OK 23 entries re-hashed, 4 checkpoint signatures" in output  # 2 in the database, 2 in the log
    assert VerificationRun.objects.get().ok
    bundle = export(tmp_path)
    assert sorted(p.name.split("-")[0] for p in (bundle / "checkpoints").iterdir()) == ["000000000010", "000000000020"]
    code, output = verify_offline(bundle)
    assert code == 0, output
    assert "OK 23 entries, 2 checkpoints verified" in output
    assert "the last 3 entries follow the last checkpoint" in output
    pinned = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0].verifier().encode()
    code, output = verify_offline(bundle, "--key", pinned)
    assert code == 0 and "keys taken from the bundle" not in output
    stranger = SignerKey.generate(settings.LEDGER_ORIGIN).verifier().encode()
    code, output = verify_offline(bundle, "--key", stranger)
    assert code == 1 and "no signature by a known key" in output


def _swap_rows(first: int, second: int) -> None:
    rows = {
        i: (bytes(b), bytes(h))
        for i, b, h in Entry.objects.filter(index__in=[first, second]).values_list("index", "body", "leaf_hash")
    }
    with connection.cursor() as cursor:
        for target, source in ((first, second), (second, first)):
            cursor.execute(
                'UPDATE ledger_entry SET body = %s, leaf_hash = %s WHERE "index" = %s', [*rows[source], target]
            )


def _flip_byte(index: int) -> None:
    body = bytearray(Entry.objects.values_list("body", flat=True).get(index=index))
    body[body.index(b'"i":') + 4] ^= 0x01  # the payload's number: still valid JSON, other bytes
    with connection.cursor() as cursor:
        cursor.execute('UPDATE ledger_entry SET body = %s WHERE "index" = %s', [bytes(body), index])


def _swap_checkpoint_root() -> None:
    low, high = Checkpoint.objects.order_by("tree_size")
    forged = low.note.replace(base64.b64encode(bytes(low.root)).decode(), base64.b64encode(bytes(high.root)).decode())
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE ledger_checkpoint SET note = %s, root = %s WHERE id = %s", [forged, bytes(high.root), low.pk]
        )


TAMPERS: dict[str, tuple[Callable[[], None], str, str]] = {
    "one byte changed": (lambda: _flip_byte(7), "entry 7", "entry 7"),
    "entry deleted": (lambda: _raw('DELETE FROM ledger_entry WHERE "index" = 7'), "entry 7", "entry 7"),
    "two entries reordered": (lambda: _swap_rows(3, 4), "entry 3", "entry 3"),
    "checkpoint root swapped": (_swap_checkpoint_root, "checkpoint ", "checkpoints/000000000010-"),
}


def _raw(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


@pytest.mark.parametrize("case", TAMPERS, ids=list(TAMPERS))
def test_tampering_is_found_and_named(ledger: None, tmp_path: Path, case: str) -> None:
    tamper, server_place, offline_place = TAMPERS[case]
    triggers.drop_rollback_unsafe(connection)
    tamper()
    code, output = verify_command()
    assert code == 1
    assert output.startswith(f"FAIL {server_place}"), output
    assert not VerificationRun.objects.order_by("-started_at").first().ok
    if case == "checkpoint root swapped":
        # The forged row is caught twice: by its signature in the database, and because the
        # checkpoint log outside the database still holds the genuine note.
        assert "does not verify" in output or "missing from the database" in output
    code, output = verify_offline(export(tmp_path))
    assert code == 1
    assert output.startswith(f"FAIL {offline_place}"), output


def test_a_consistent_rewrite_of_the_bundle_is_caught_by_the_signed_roots(ledger: None, tmp_path: Path) -> None:
    bundle = export(tmp_path)
    lines = (bundle / "entries.jsonl").read_text().splitlines()
    record = json.loads(lines[5])
    record["entry"]["payload"]["i"] = 500  # a rewrite that keeps the copy and the bytes in step
    body = json.dumps(record["entry"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    record["body_b64"] = base64.b64encode(body).decode()
    record["leaf_hash_b64"] = base64.b64encode(merkle.leaf_hash(body)).decode()
    lines[5] = json.dumps(record)
    (bundle / "entries.jsonl").write_text("\n".join(lines) + "\n")
    code, output = verify_offline(bundle)
    assert code == 1
    assert output.startswith("FAIL checkpoints/000000000010-") and "does not match the root of entries 0..9" in output


def test_removing_entries_from_the_end_is_caught(ledger: None, tmp_path: Path) -> None:
    bundle = export(tmp_path)
    lines = (bundle / "entries.jsonl").read_text().splitlines()
    (bundle / "entries.jsonl").write_text("\n".join(lines[:15]) + "\n")
    code, output = verify_offline(bundle)
    assert code == 1 and "the log holds only 15 entries" in output


def test_export_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not empty"):
        call_command("ledger", "export", str(tmp_path / "busy"))


def test_a_history_signed_again_is_caught_by_a_checkpoint_saved_earlier(ledger: None, tmp_path: Path) -> None:
    saved = tmp_path / "seen-in-march.note"
    saved.write_text(Checkpoint.objects.order_by("-tree_size").first().note)
    pinned = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0].verifier().encode()
    bundle = export(tmp_path)
    assert verify_offline(bundle, "--key", pinned, "--checkpoint", str(saved))[0] == 0

    # The operator rewrites entry 5 and signs new checkpoints over the new history with its own key.
    lines = (bundle / "entries.jsonl").read_text().splitlines()
    record = json.loads(lines[5])
    record["entry"]["payload"]["i"] = 500
    body = json.dumps(record["entry"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    record["body_b64"] = base64.b64encode(body).decode()
    record["leaf_hash_b64"] = base64.b64encode(merkle.leaf_hash(body)).decode()
    lines[5] = json.dumps(record)
    (bundle / "entries.jsonl").write_text("\n".join(lines) + "\n")
    bodies = [base64.b64decode(json.loads(line)["body_b64"]) for line in lines]
    signer = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0]
    for path in (bundle / "checkpoints").glob("*.note"):
        old, _ = notes.parse(path.read_text())
        forged = notes.Checkpoint(origin=old.origin, size=old.size, root=merkle.slow_mth(bodies[: old.size]))
        path.write_text(notes.sign(forged, [signer]))

    forged_ok = verify_offline(bundle, "--key", pinned)
    assert forged_ok[0] == 0, forged_ok[1]  # the signatures alone cannot tell
    code, output = verify_offline(bundle, "--key", pinned, "--checkpoint", str(saved))
    assert code == 1 and output.startswith(f"FAIL --checkpoint {saved} (size 20)"), output
    assert "does not match the root of entries 0..19" in output
