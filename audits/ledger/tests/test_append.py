"""Appending entries: canonical bytes, contiguous indexes, transactions, append-only enforcement."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import rfc8785
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError, IntegrityError, connection, transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.ledger import merkle
from audits.ledger.models import AppendOnlyError, Checkpoint, Entry, Node
from audits.ledger.selectors import consistency_proof, head_tree, inclusion_proof, root_at
from audits.ledger.services import (
    Actor,
    AppendRequest,
    LedgerError,
    Subject,
    canonical_body,
    canonical_text,
    checkpoint_create,
    entry_document,
    ledger_append,
)
from common.request_context import reset_request_id, set_request_id

pytestmark = pytest.mark.django_db


def test_entry_bytes_are_canonical_json_hashed_as_rfc9162_leaves(actor: object) -> None:
    token = set_request_id("req-0123456789ab")
    try:
        appended = ledger_append(
            actor=actor,
            action="dataset_version.register",
            subject=Subject(type="dataset_version", id="7", digest="sha256:ab"),
            payload={"b": 1, "a": [True, None, "é"]},
            policy_hash="sha256:cd",
        )
    finally:
        reset_request_id(token)
    entry = Entry.objects.get(index=appended.index)
    body = bytes(entry.body)
    assert body == appended.body
    assert bytes(entry.leaf_hash) == hashlib.sha256(b"\x00" + body).digest()
    decoded = json.loads(body)
    assert json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() == body
    assert decoded["index"] == 0 and decoded["v"] == 1
    assert decoded["actor"] == {"id": str(actor.pk), "name": "ledger-tester"}
    assert decoded["subject"] == {"type": "dataset_version", "id": "7", "digest": "sha256:ab"}
    assert decoded["request_id"] == "req-0123456789ab"
    assert decoded["policy_hash"] == "sha256:cd"
    assert decoded["time"].endswith("Z")
    assert (entry.action, entry.subject_type, entry.subject_id) == ("dataset_version.register", "dataset_version", "7")


def test_indexes_are_contiguous_and_a_rollback_leaves_no_gap(append: Callable[..., object], actor: object) -> None:
    append(3)
    with pytest.raises(RuntimeError), transaction.atomic():
        ledger_append(actor=actor, action="test.doomed", payload={})
        raise RuntimeError("the governed change failed")
    append(2)
    assert list(Entry.objects.values_list("index", flat=True)) == [0, 1, 2, 3, 4]
    assert not Entry.objects.filter(action="test.doomed").exists()
    assert head_tree().size == 5


def test_roots_and_proofs_from_stored_nodes_match_the_reference(append: Callable[..., object]) -> None:
    append(37)
    bodies = [bytes(b) for b in Entry.objects.order_by("index").values_list("body", flat=True)]
    for size in (1, 2, 5, 16, 37):
        assert root_at(size) == merkle.slow_mth(bodies[:size])
    assert head_tree().root() == merkle.slow_mth(bodies)
    for index in (0, 13, 36):
        merkle.verify_inclusion(index, 37, merkle.leaf_hash(bodies[index]), inclusion_proof(index, 37), root_at(37))
    merkle.verify_consistency(11, 37, root_at(11), root_at(37), consistency_proof(11, 37))
    assert Node.objects.count() == 37 - bin(37).count("1")  # one stored node per completed subtree


def test_a_proof_costs_two_queries_whatever_the_size(append: Callable[..., object]) -> None:
    from django.test.utils import CaptureQueriesContext

    append(70)
    for size in (9, 70):
        with CaptureQueriesContext(connection) as ctx:
            inclusion_proof(3, size)
        assert len(ctx.captured_queries) == 3  # the head (size check), leaf hashes, upper nodes


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"payload": {"when": object()}}, "payload_not_json"),
        ({"payload": {"ratio": float("nan")}}, "payload_not_json"),
        ({"payload": {"blob": b"bytes"}}, "payload_not_json"),
        ({"payload": {1: "non-string key"}}, "payload_not_json"),
        ({"payload": {"big": 2**60}}, "payload_not_json"),
        ({"payload": {"x": "y" * 70_000}}, "payload_too_large"),
        ({"action": "Not A Dotted Name"}, "invalid_action"),
        ({"action": "single"}, "invalid_action"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    actor: object, append: Callable[..., object], kwargs: dict[str, object], code: str
) -> None:
    append(2)
    before = (Entry.objects.count(), head_tree().size, head_tree().root(), Node.objects.count())
    arguments: dict[str, object] = {"actor": actor, "action": "test.event", "payload": {}} | kwargs
    with pytest.raises(LedgerError) as caught:
        ledger_append(**arguments)
    assert caught.value.code == code
    assert (Entry.objects.count(), head_tree().size, head_tree().root(), Node.objects.count()) == before


def test_an_anonymous_actor_is_refused() -> None:
    with pytest.raises(LedgerError, match="authenticated actor"):
        ledger_append(actor=AnonymousUser(), action="test.event")


def test_the_model_layer_refuses_update_and_delete(append: Callable[..., object]) -> None:
    append(2)
    entry = Entry.objects.get(index=0)
    entry.action = "test.rewritten"
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        Entry.objects.filter(index=1).update(action="test.rewritten")
    with pytest.raises(AppendOnlyError):
        Entry.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        Checkpoint.objects.all().delete()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_entry SET action = 'test.rewritten' WHERE \"index\" = 0",
        'DELETE FROM ledger_entry WHERE "index" = 1',
        "DELETE FROM ledger_entry",
        "UPDATE ledger_node SET hash = hash",
        "DELETE FROM ledger_checkpoint",
    ],
)
def test_database_triggers_refuse_raw_sql(append: Callable[..., object], sql: str) -> None:
    append(4)
    checkpoint_create()
    with (
        pytest.raises((IntegrityError, DatabaseError), match="append-only"),
        transaction.atomic(),
        connection.cursor() as c,
    ):
        c.execute(sql)
    assert (Entry.objects.count(), Checkpoint.objects.count()) == (4, 1)
    assert Entry.objects.get(index=0).action == "test.event"


def test_database_triggers_refuse_truncate(append: Callable[..., object]) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no TRUNCATE statement; its DELETE trigger covers a whole-table delete")
    append(2)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
        c.execute("TRUNCATE ledger_entry")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


# Every code point, the lone surrogates and the control characters included.
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))


@settings(max_examples=200, deadline=None)
@given(
    payload=json_values, name=st.text(min_size=1, max_size=20), request_id=st.none() | st.text(max_size=20),
    subject=st.none()
    | st.builds(Subject, type=st.text(max_size=8), id=st.text(max_size=8), digest=st.none() | st.text(max_size=8)),
)  # fmt: skip
def test_assembled_body_is_exactly_the_rfc8785_form(
    payload: object, name: str, request_id: str | None, subject: Subject | None
) -> None:
    request = AppendRequest(
        actor=Actor(id="7", name=name),
        action="test.event",
        subject=subject,
        payload=payload,
        policy_hash="sha256:00",
        request_id=request_id,
    )
    when = datetime(2026, 11, 27, 23, 59, 59, 123456, tzinfo=UTC)
    expected = rfc8785.dumps(entry_document(41, when, request))
    assert canonical_body(41, when, request, rfc8785.dumps(payload)) == expected


@settings(max_examples=1000, deadline=None)
@given(value=st.none() | any_text | st.sampled_from(["\ud800", "a\udfff", '\x00\x1f\x7f\u2028"\\\b\f\n\t', "é😀"]))
def test_canonical_text_is_rfc8785_or_refused_alike(value: str | None) -> None:
    """The envelope's strings skip the general encoder: byte for byte its output, and a string it
    refuses (a lone surrogate) is refused with its error."""
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        with pytest.raises(type(exc)):
            canonical_text(value)
        return
    assert canonical_text(value) == expected
