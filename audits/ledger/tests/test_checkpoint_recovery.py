"""A signer that stops between the checkpoint log's fsync and the row's commit leaves a signed
checkpoint in the log that the database lacks. The next signing records it from the log (only if
it verifies and matches the stored tree), and a line the crash cut short is cut off."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.conf import settings
from django.db import transaction

from audits.ledger import verification
from audits.ledger.models import Checkpoint
from audits.ledger.replay import VerificationFailed
from audits.ledger.services import LedgerIntegrityError, checkpoint_create

pytestmark = pytest.mark.django_db


class _Stopped(Exception):
    pass


def _sign_and_stop_before_commit() -> None:
    """The log line is written and fsynced; the transaction around the row never commits."""
    with pytest.raises(_Stopped), transaction.atomic():
        checkpoint_create()
        raise _Stopped


def _log_lines() -> list[str]:
    return settings.LEDGER_CHECKPOINT_LOG.read_text().splitlines()


def test_a_checkpoint_logged_but_not_committed_is_recorded_by_the_next_signing(append: Callable[..., object]) -> None:
    append(10)
    checkpoint_create()
    append(5)
    _sign_and_stop_before_commit()
    assert Checkpoint.objects.count() == 1 and len(_log_lines()) == 2
    with pytest.raises(VerificationFailed, match="checkpoint log line 2: this signed checkpoint is missing"):
        verification.ledger_verify()

    adopted = checkpoint_create()  # the tree has not grown: nothing new is signed
    assert adopted is not None and adopted.tree_size == 15
    assert adopted.note == json.loads(_log_lines()[1])["note"] and len(_log_lines()) == 2
    assert list(Checkpoint.objects.values_list("tree_size", flat=True).order_by("tree_size")) == [10, 15]
    assert verification.ledger_verify().tree_size == 15

    append(2)
    assert checkpoint_create().tree_size == 17
    assert verification.ledger_verify().checkpoints_checked == 6  # 3 rows, 3 log lines


def test_the_recovered_checkpoint_is_recorded_before_a_new_one_when_the_tree_grew(
    append: Callable[..., object],
) -> None:
    append(4)
    _sign_and_stop_before_commit()
    append(3)
    newest = checkpoint_create()
    assert newest.tree_size == 7
    assert list(Checkpoint.objects.values_list("tree_size", flat=True).order_by("tree_size")) == [4, 7]
    assert verification.ledger_verify().tree_size == 7


def test_a_line_cut_short_by_a_crash_is_cut_off(append: Callable[..., object]) -> None:
    append(3)
    checkpoint_create()
    whole = settings.LEDGER_CHECKPOINT_LOG.read_bytes()
    with settings.LEDGER_CHECKPOINT_LOG.open("ab") as log:
        log.write(b'{"tree_size": 5, "created_at": "2026-')  # no newline: the write was cut short
    append(2)
    assert checkpoint_create().tree_size == 5
    lines = _log_lines()
    assert settings.LEDGER_CHECKPOINT_LOG.read_bytes().startswith(whole) and len(lines) == 2
    assert json.loads(lines[1])["tree_size"] == 5
    assert verification.ledger_verify().tree_size == 5


def _forge_last_line(edit: Callable[[dict[str, object]], None]) -> None:
    lines = _log_lines()
    record = json.loads(lines[-1])
    edit(record)
    lines[-1] = json.dumps(record)
    settings.LEDGER_CHECKPOINT_LOG.write_text("\n".join(lines) + "\n")


def _other_root(record: dict[str, object]) -> None:
    origin, size, _root, rest = str(record["note"]).split("\n", 3)
    record["note"] = f"{origin}\n{size}\n{'A' * 43}=\n{rest}"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_other_root, "does not verify"),
        (lambda record: record.update(note="not a note"), "does not verify"),
        (lambda record: record.pop("note"), "is not a checkpoint record"),
    ],
    ids=["root changed", "not a note", "no note"],
)
def test_a_logged_checkpoint_that_does_not_check_out_stops_signing(
    append: Callable[..., object], edit: Callable[[dict[str, object]], None], message: str
) -> None:
    append(4)
    _sign_and_stop_before_commit()
    _forge_last_line(edit)
    append(1)
    with pytest.raises(LedgerIntegrityError, match=message):
        checkpoint_create()
    assert Checkpoint.objects.count() == 0 and len(_log_lines()) == 1


def test_a_genuine_checkpoint_of_another_tree_is_not_adopted(append: Callable[..., object]) -> None:
    with pytest.raises(_Stopped), transaction.atomic():  # entries and checkpoint roll back, the line stays
        append(6)
        checkpoint_create()
        raise _Stopped
    logged = _log_lines()
    append(6, action="test.other")  # another history of the same size
    with pytest.raises(LedgerIntegrityError, match="its root at size 6 is not the stored tree's"):
        checkpoint_create()
    assert Checkpoint.objects.count() == 0 and _log_lines() == logged
