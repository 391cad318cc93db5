"""Incremental verification: from the last checkpoint a passing run covered, only what is new is
read again; the full verification still catches what happened before it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection

from audits.ledger import triggers
from audits.ledger.models import Node
from audits.ledger.replay import VerificationFailed
from audits.ledger.services import checkpoint_create
from audits.ledger.tests.test_verify import _flip_byte, verify_command
from audits.ledger.verification import ledger_verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def verified(append: Callable[..., object]) -> None:
    """50 entries verified in full (checkpoints at 20 and 50), then 30 more and a checkpoint at 80."""
    append(20)
    checkpoint_create()
    append(30)
    checkpoint_create()
    assert ledger_verify().verified_from == 0
    append(30)
    checkpoint_create()


def test_it_reads_only_what_follows_the_last_verified_checkpoint(verified: None) -> None:
    seen: list[int] = []
    result = ledger_verify(incremental=True, progress=seen.append)
    assert (result.tree_size, result.verified_from) == (80, 50)
    assert result.checkpoints_checked == 4  # the anchor at 50 and the new one at 80, each as row and log line
    assert seen == [80]
    again = ledger_verify(incremental=True)  # the next run starts where this one ended
    assert (again.tree_size, again.verified_from) == (80, 80)
    code, output = verify_command()
    assert code == 0 and output.startswith("OK 80 entries re-hashed, "), output


def test_a_change_after_the_anchor_is_found_and_one_before_it_only_by_the_full_run(verified: None) -> None:
    triggers.drop_rollback_unsafe(connection)
    _flip_byte(60)
    with pytest.raises(VerificationFailed, match="entry 60"):
        ledger_verify(incremental=True)
    # After a failed run there is no anchor: the next incremental run checks everything again.
    with pytest.raises(VerificationFailed, match="entry 60"):
        ledger_verify(incremental=True)


def test_an_old_change_is_left_to_the_full_run(verified: None) -> None:
    assert ledger_verify(incremental=True).verified_from == 50
    triggers.drop_rollback_unsafe(connection)
    _flip_byte(7)  # below the anchor: the incremental run does not read it again, by design
    assert ledger_verify(incremental=True).verified_from == 80
    with pytest.raises(VerificationFailed, match="entry 7"):
        ledger_verify()


def test_stored_subtree_hashes_that_no_longer_give_the_anchors_root_are_refused(verified: None) -> None:
    triggers.drop_rollback_unsafe(connection)
    level, position = 5, 0  # the perfect subtree of entries 0..31, part of the right edge at 50
    with connection.cursor() as cursor:
        cursor.execute('UPDATE ledger_node SET hash = %s WHERE "key" = %s', [b"\0" * 32, level << 48 | position])
    assert Node.objects.filter(key=level << 48 | position).exists()
    with pytest.raises(VerificationFailed, match="do not give its signed root"):
        ledger_verify(incremental=True)


def test_without_an_earlier_run_it_verifies_everything(append: Callable[..., object]) -> None:
    append(12)
    checkpoint_create()
    result = ledger_verify(incremental=True)
    assert (result.tree_size, result.verified_from) == (12, 0)
