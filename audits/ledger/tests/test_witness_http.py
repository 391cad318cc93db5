"""Two services witnessing over real HTTP on loopback: the service under test is the log; a second
one, the live server (its own thread and HTTP listener), is its witness, and, the other way round,
a second log (its own origin and key) submits its checkpoints to the service's endpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from llmops_ledger_verify.cosignature import cosignatures

from audits.ledger import merkle, notes
from audits.ledger.keys import SignerKey, load_signer_keys
from audits.ledger.models_witness import WitnessCosignature, WitnessedLog
from audits.ledger.services import checkpoint_create
from audits.ledger.witness.keys import WitnessKey, write_witness_key
from audits.ledger.witness.selectors import cosigned_note
from audits.ledger.witness.submit import http_post, request_body, witness_latest
from audits.ledger.witness.verify import check_quorum


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_services_witness_each_other_over_http(
    live_server: Any, settings: Any, tmp_path: Path, append: Callable[..., Any]
) -> None:
    key = WitnessKey.generate("witness.test/live")
    settings.LEDGER_WITNESS_KEY_FILE = tmp_path / "witness.key"
    write_witness_key(settings.LEDGER_WITNESS_KEY_FILE, key)
    own_key = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0]
    peer = SignerKey.generate("peer.test/log")
    settings.LEDGER_WITNESSED_LOGS = {
        settings.LEDGER_ORIGIN: [own_key.verifier().encode()],
        "peer.test/log": [peer.verifier().encode()],
    }
    settings.LEDGER_WITNESSES = [{"key": key.verifier().encode(), "url": f"{live_server.url}/witness"}]
    settings.LEDGER_WITNESS_QUORUM = 1

    # This service's log, co-signed by the witness over HTTP, twice (the second with a proof).
    append(3)
    first = checkpoint_create()
    assert witness_latest() == {"witness.test/live": "co-signed"}
    append(4)
    checkpoint_create()
    assert witness_latest() == {"witness.test/live": "co-signed"}
    assert list(WitnessCosignature.objects.values_list("tree_size", flat=True)) == [3, 7]
    assert key.verifier() in cosignatures(cosigned_note(first), [key.verifier()])
    assert check_quorum().witnessed_size == 7

    # The peer log: a tree of its own, sent to this service's endpoint over HTTP.
    leaves = [b"peer entry %d" % i for i in range(5)]
    url = f"{live_server.url}/witness/add-checkpoint"
    small = notes.sign(notes.Checkpoint("peer.test/log", 2, merkle.slow_mth(leaves[:2])), [peer])
    status, _, line = http_post(url, request_body(0, [], small), 5)
    assert status == 200 and key.verifier() in cosignatures(small + line, [key.verifier()])
    grown = notes.sign(notes.Checkpoint("peer.test/log", 5, merkle.slow_mth(leaves)), [peer])
    proof = _consistency(leaves, 2)
    assert http_post(url, request_body(2, proof, grown), 5)[0] == 200
    forked = notes.sign(notes.Checkpoint("peer.test/log", 5, merkle.slow_mth([*leaves[:4], b"other"])), [peer])
    status, content_type, text = http_post(url, request_body(5, [], forked), 5)
    assert (status, content_type, text) == (409, "text/x.tlog.size", "5\n")
    assert WitnessedLog.objects.get(origin="peer.test/log").size == 5


def _consistency(leaves: list[bytes], first: int) -> list[bytes]:
    """An RFC 9162 consistency proof from ``first`` to all ``leaves``, computed here from the leaves."""
    second = len(leaves)
    ranges = merkle.consistency_ranges(first, second)
    return [merkle.slow_mth(leaves[start:end]) for start, end in ranges]
