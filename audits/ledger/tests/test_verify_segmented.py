"""A full replay split across processes (``replay.Segmented``): the same answer as one process.

Segments start where their subtrees are the whole tree's, so their right edges add up to the
tree's; every checkpoint inside a segment is checked on that sum. Any fault sends the replay back to
one process, so a tampered log fails with the message it always had.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from itertools import pairwise

import pytest
from django.db import connection
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from llmops_ledger_verify import notes
from llmops_ledger_verify import replay as replay_module
from llmops_ledger_verify.replay import segment_bounds

from audits.ledger import merkle, triggers
from audits.ledger.models import Entry
from audits.ledger.replay import Segmented, SignedCheckpoint, VerificationFailed, replay
from audits.ledger.services import checkpoint_create
from audits.ledger.verification import ledger_verify

Row = tuple[int, bytes, bytes | None]


def _log(size: int) -> list[Row]:
    rows = []
    for index in range(size):
        body = b'{"action":"t","actor":{"id":"1","name":"a"},"index":%d,"payload":{}}' % index
        rows.append((index, body, hashlib.sha256(b"\x00" + body).digest()))
    return rows


def _checkpoints(rows: list[Row], sizes: Iterable[int]) -> list[SignedCheckpoint]:
    out = []
    for size in sorted(set(sizes)):
        tree = merkle.CompactRange()
        for _, body, _ in rows[:size]:
            tree.append(merkle.leaf_hash(body))
        out.append(SignedCheckpoint(f"checkpoint (size {size})", notes.Checkpoint("test/log", size, tree.root())))
    return out


def _outcome(run: Callable[[], object]) -> object:
    try:
        return run()
    except VerificationFailed as failure:
        return str(failure)


def _both(rows: list[Row], checkpoints: list[SignedCheckpoint], size: int, processes: int) -> tuple[object, object]:
    """The replay in one process, and split into ``processes`` segments."""
    segmented = Segmented(entries=lambda lo, hi: [r for r in rows if lo <= r[0] < hi], size=size, processes=processes)
    one = _outcome(lambda: replay(lambda: iter(rows), checkpoints))
    split = _outcome(lambda: replay(lambda: iter(rows), checkpoints, segmented=segmented))
    return one, split


@pytest.mark.pure
@given(size=st.integers(1, 5000), parts=st.integers(1, 9))
def test_segments_cover_the_log_each_starting_where_its_subtrees_are_the_trees(size: int, parts: int) -> None:
    bounds = segment_bounds(size, parts)
    assert bounds[0][0] == 0 and bounds[-1][1] == size and 1 <= len(bounds) <= parts
    for (_, hi), (lo, _) in pairwise(bounds):
        assert hi == lo
    for lo, hi in bounds:
        assert lo < hi and lo % (1 << ((hi - lo).bit_length() - 1)) == 0


@pytest.mark.pure
@hypothesis_settings(max_examples=30, deadline=None)  # each example forks its children
@given(data=st.data(), size=st.integers(1, 700), processes=st.integers(2, 4))
def test_a_split_replay_gives_the_same_tree_and_checks_every_checkpoint(
    data: st.DataObject, size: int, processes: int
) -> None:
    rows = _log(size)
    sizes = data.draw(st.lists(st.integers(0, size), max_size=6))
    checkpoints = _checkpoints(rows, sizes)
    one, split = _both(rows, checkpoints, size, processes)
    assert split == one
    assert one.tree_size == size and one.checkpoints_checked == len(checkpoints)  # type: ignore[attr-defined]


def _tampered(rows: list[Row], case: str) -> list[Row]:
    rows = list(rows)
    if case == "byte changed under a checkpoint":
        index, body, leaf = rows[300]
        rows[300] = (index, body.replace(b'"t"', b'"u"'), leaf)
    elif case == "byte changed after the last checkpoint":
        index, body, leaf = rows[590]
        rows[590] = (index, body.replace(b'"t"', b'"u"'), leaf)
    elif case == "entry missing":
        del rows[200]
    elif case == "two entries reordered":
        rows[100], rows[101] = (100, *rows[101][1:]), (101, *rows[100][1:])
    elif case == "entries removed from the end":
        del rows[560:]
    return rows


@pytest.mark.pure
@pytest.mark.parametrize(
    "case",
    [
        "byte changed under a checkpoint",
        "byte changed after the last checkpoint",
        "entry missing",
        "two entries reordered",
        "entries removed from the end",
    ],
)
def test_a_fault_fails_the_split_replay_with_the_message_of_one_process(case: str) -> None:
    honest = _log(600)
    checkpoints = _checkpoints(honest, [150, 400, 580])
    one, split = _both(_tampered(honest, case), checkpoints, 600, 3)
    assert isinstance(one, str) and split == one


@pytest.mark.pure
def test_a_checkpoint_whose_root_is_not_the_logs_fails_by_name() -> None:
    rows = _log(600)
    real = _checkpoints(rows, [400])[0]
    forged = SignedCheckpoint(real.label, notes.Checkpoint("test/log", 400, b"\x07" * 32))
    one, split = _both(rows, [forged], 600, 3)
    assert split == one == f"{real.label}: the signed root does not match the root of entries 0..399"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the children read committed rows
def test_ledger_verify_splits_a_long_log_and_still_names_a_tampered_entry(
    append: Callable[..., object], monkeypatch: pytest.MonkeyPatch, settings: object
) -> None:
    from audits.ledger import verification

    monkeypatch.setattr(verification, "SEGMENT_MIN", 16)
    settings.LEDGER_VERIFY_PROCESSES = 3  # type: ignore[attr-defined]
    append(40)
    checkpoint_create()
    append(30)
    checkpoint_create()
    append(5)
    answers: list[object] = []
    segments = replay_module.replay_segments

    def recorded(*args: object, **kwargs: object) -> object:
        answers.append(segments(*args, **kwargs))  # type: ignore[arg-type]
        return answers[-1]

    monkeypatch.setattr(replay_module, "replay_segments", recorded)
    result = ledger_verify()
    assert len(answers) == 1 and answers[0] == result  # the split replay answered
    assert result.tree_size == Entry.objects.count()

    triggers.drop_rollback_unsafe(connection)
    body = bytes(Entry.objects.values_list("body", flat=True).get(index=50))
    with connection.cursor() as cursor:
        cursor.execute('UPDATE ledger_entry SET body = %s WHERE "index" = 50', [body.replace(b'"i":', b'"j":')])
    with pytest.raises(VerificationFailed) as split:
        ledger_verify()
    assert answers[-1] is None  # the split replay saw a fault; one process named it
    settings.LEDGER_VERIFY_PROCESSES = 1  # type: ignore[attr-defined]
    with pytest.raises(VerificationFailed) as one:
        ledger_verify()
    assert str(split.value) == str(one.value) and str(one.value).startswith("entry 50: ")
