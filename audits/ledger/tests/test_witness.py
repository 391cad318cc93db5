"""Witnessed checkpoints (C2SP tlog-witness, tlog-cosignature): the witness endpoint, the log's
submissions and stored co-signatures, the k-of-n policy, and the split view refused by the witness,
the service's verification and the offline verifier."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from llmops_ledger_verify.cosignature import CosignerKey, cosignatures, note_body

from audits.ledger import merkle, notes
from audits.ledger.keys import SignerKey, load_signer_keys
from audits.ledger.models import Checkpoint, Entry
from audits.ledger.models_witness import WitnessConflict, WitnessCosignature, WitnessedLog
from audits.ledger.replay import VerificationFailed
from audits.ledger.selectors import consistency_proof
from audits.ledger.services import checkpoint_create
from audits.ledger.tests.test_verify import export, verify_offline
from audits.ledger.witness.keys import WitnessKey, write_witness_key
from audits.ledger.witness.selectors import cosigned_note
from audits.ledger.witness.submit import (
    WitnessRefused,
    WitnessUnavailable,
    configured_witnesses,
    request_body,
    witness_latest,
    witness_submit,
)
from audits.ledger.witness.verify import check_quorum
from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.django_db
URL = "/witness/add-checkpoint"


@pytest.fixture
def witness(settings: Any, tmp_path: Path) -> WitnessKey:
    """This service witnesses its own log (origin and key from configuration) and is that log's
    one witness, quorum 1; requests go through Django's test client (``over_client``)."""
    key = WitnessKey.generate("witness.test/w1")
    settings.LEDGER_WITNESS_KEY_FILE = tmp_path / "witness.key"
    write_witness_key(settings.LEDGER_WITNESS_KEY_FILE, key)
    log_key = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0].verifier().encode()
    settings.LEDGER_WITNESSED_LOGS = {settings.LEDGER_ORIGIN: [log_key]}
    settings.LEDGER_WITNESSES = [{"key": key.verifier().encode(), "url": "http://testserver/witness"}]
    settings.LEDGER_WITNESS_QUORUM = 1
    return key


def over_client(url: str, body: bytes, timeout: float) -> tuple[int, str, str]:
    assert url == "http://testserver" + URL
    response = Client().post(URL, body, content_type="text/plain")
    return response.status_code, response["Content-Type"], response.content.decode()


def post(body: bytes | str) -> Any:
    return Client().post(URL, body.encode() if isinstance(body, str) else body, content_type="text/plain")


def signer() -> SignerKey:
    return load_signer_keys(django_settings.LEDGER_SIGNING_KEY_FILE)[0]


def forked_note(size: int) -> str:
    """A checkpoint of ``size`` signed by the log's own key over another history: what an operator
    would show to some readers and not to others."""
    bodies = [bytes(b) for b in Entry.objects.order_by("index").values_list("body", flat=True)[:size]]
    bodies[-1] = bodies[-1].replace(b'"i":', b'"i":1')
    other = notes.Checkpoint(origin=django_settings.LEDGER_ORIGIN, size=size, root=merkle.slow_mth(bodies))
    return notes.sign(other, [signer()])


# --- The formats, held against the specs' own text --------------------------------------------


def test_cosignature_follows_tlog_cosignature_byte_for_byte(witness: WitnessKey) -> None:
    from llmops_ledger_verify.cosignature import cosign

    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    line = cosign(body, witness, 1679315147)
    name, blob = line[len("\u2014 ") : -1].split(" ")
    raw = base64.b64decode(blob)
    assert name == "witness.test/w1" and len(raw) == 4 + 8 + 64
    # The key ID and the signed message, computed here from the spec's words, not the module's code.
    public = witness.public_key
    assert raw[:4] == hashlib.sha256(b"witness.test/w1\n\x04" + public).digest()[:4]
    assert int.from_bytes(raw[4:12], "big") == 1679315147
    message = b"cosignature/v1\ntime 1679315147\n" + body.encode()
    Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message)  # raises if not
    vkey = witness.verifier().encode()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert CosignerKey.decode(vkey) == witness.verifier()
    # The spec's example co-signature line parses: key ID, then the big-endian time of its example.
    example = (
        "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
        "qhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    )
    (parsed,) = notes.parse_signature_lines(example)
    assert parsed.key_id.hex() == "8d66cf3f" and int.from_bytes(parsed.signature[:8], "big") == 1679315147


# --- The witness endpoint ------------------------------------------------------------------


def test_the_witness_cosigns_moves_forward_and_keeps_its_state(witness: WitnessKey, append: Callable[..., Any]) -> None:
    append(3)
    first = checkpoint_create()
    answer = post(request_body(0, [], first.note))
    assert answer.status_code == 200, answer.content
    assert cosignatures(first.note + answer.content.decode(), [witness.verifier()])
    state = WitnessedLog.objects.get(origin=django_settings.LEDGER_ORIGIN)
    assert (state.size, bytes(state.root)) == (3, bytes(first.root))

    append(2)
    second = checkpoint_create()
    stale = post(request_body(0, [], second.note))  # the log does not know what was co-signed
    assert stale.status_code == 409 and stale["Content-Type"] == "text/x.tlog.size" and stale.content == b"3\n"
    moved = post(request_body(3, consistency_proof(3, 5), second.note))
    assert moved.status_code == 200
    assert WitnessedLog.objects.get(origin=django_settings.LEDGER_ORIGIN).size == 5
    assert post(request_body(5, [], second.note)).status_code == 200  # the same tree again: co-signed again
    behind = post(request_body(3, consistency_proof(3, 5), second.note))
    assert behind.status_code == 409 and behind.content == b"5\n"  # never back


def test_the_witness_answers_each_refusal_with_the_specs_status(
    witness: WitnessKey, append: Callable[..., Any], settings: Any
) -> None:
    append(4)
    checkpoint = checkpoint_create()
    stranger = notes.sign(notes.Checkpoint(django_settings.LEDGER_ORIGIN, 4, bytes(checkpoint.root)),
                          [SignerKey.generate(django_settings.LEDGER_ORIGIN)])  # fmt: skip
    elsewhere = notes.sign(notes.Checkpoint("other.example/log", 4, bytes(checkpoint.root)), [signer()])
    cases = {
        "no old line": (checkpoint.note, 400),
        "old size with a leading zero": (request_body(0, [], checkpoint.note).replace(b"old 0", b"old 00"), 400),
        "proof line not base64": (b"old 0\n!!!\n\n" + checkpoint.note.encode(), 400),
        "proof with old size 0": (request_body(0, [b"\x00" * 32], checkpoint.note), 400),
        "64 proof lines": (request_body(2, [b"\x00" * 32] * 64, checkpoint.note), 400),
        "old size above the checkpoint": (request_body(9, [], checkpoint.note), 400),
        "not UTF-8": (b"old 0\n\n\xff", 400),
        "unknown origin": (request_body(0, [], elsewhere), 404),
        "signed by another key": (request_body(0, [], stranger), 403),
    }
    for case, (body, status) in cases.items():
        response = post(body)
        assert response.status_code == status, (case, response.content)
        assert response.content.endswith(b"\n") and b"Traceback" not in response.content
    assert Client().get(URL).status_code == 405
    settings.LEDGER_WITNESS_KEY_FILE.chmod(0o644)  # a key others can read is refused, not used
    unusable = post(request_body(0, [], checkpoint.note))
    assert unusable.status_code == 503 and b"key is unavailable" in unusable.content
    settings.LEDGER_WITNESS_KEY_FILE.chmod(0o600)
    assert not WitnessedLog.objects.filter(size__gt=0).exists()

    assert post(request_body(0, [], checkpoint.note)).status_code == 200
    append(4)
    grown = checkpoint_create()
    wrong_proof = consistency_proof(4, 8)
    wrong_proof[0] = hashlib.sha256(wrong_proof[0]).digest()
    refused = post(request_body(4, wrong_proof, grown.note))
    assert refused.status_code == 422
    assert WitnessedLog.objects.get().size == 4
    assert WitnessConflict.objects.get().reason.startswith("no consistency from size 4")


# --- This log's submissions ----------------------------------------------------------------


def test_the_log_stores_cosignatures_serves_them_and_proves_consistency_from_the_last(
    witness: WitnessKey, append: Callable[..., Any]
) -> None:
    append(5)
    first = checkpoint_create()
    assert witness_latest(transport=over_client) == {"witness.test/w1": "co-signed"}
    stored = WitnessCosignature.objects.get()
    assert (stored.checkpoint_id, stored.tree_size, stored.note) == (first.pk, 5, first.note)
    served = cosigned_note(first)
    assert served.startswith(first.note) and served.count("\u2014 ") == 2
    assert notes.verify(served, [signer().verifier()]).size == 5  # a plain note reader ignores the line
    assert witness.verifier() in cosignatures(served, [witness.verifier()])

    append(6)
    second = checkpoint_create()
    sent: list[bytes] = []

    def recording(url: str, body: bytes, timeout: float) -> tuple[int, str, str]:
        sent.append(body)
        return over_client(url, body, timeout)

    assert witness_latest(transport=recording) == {"witness.test/w1": "co-signed"}
    assert sent == [request_body(5, consistency_proof(5, 11), second.note)]
    assert witness_latest(transport=recording) == {"witness.test/w1": "co-signed"} and len(sent) == 1  # not again
    assert check_quorum().witnessed_size == 11


def test_a_log_that_lost_its_record_learns_the_witness_size_from_409(
    witness: WitnessKey, append: Callable[..., Any]
) -> None:
    append(3)
    checkpoint_create()
    assert post(request_body(0, [], Checkpoint.objects.get().note)).status_code == 200  # co-signed, not stored here
    append(3)
    second = checkpoint_create()
    sent: list[bytes] = []

    def recording(url: str, body: bytes, timeout: float) -> tuple[int, str, str]:
        sent.append(body)
        return over_client(url, body, timeout)

    (witness_config,) = configured_witnesses()
    assert witness_submit(witness=witness_config, checkpoint=second, transport=recording) is not None
    assert [body.split(b"\n", 1)[0] for body in sent] == [b"old 0", b"old 3"]


def test_an_unreachable_witness_is_retried_and_a_refusal_is_not(
    witness: WitnessKey, append: Callable[..., Any], settings: Any
) -> None:
    append(2)
    checkpoint_create()

    def down(url: str, body: bytes, timeout: float) -> tuple[int, str, str]:
        raise WitnessUnavailable(f"{url}: connection refused")

    with pytest.raises(WitnessUnavailable, match="connection refused"):
        witness_latest(transport=down)
    with pytest.raises(WitnessUnavailable, match="answered 503"):
        witness_latest(transport=lambda url, body, timeout: (503, "text/plain", "busy\n"))
    settings.LEDGER_WITNESSED_LOGS = {}
    assert witness_latest(transport=over_client)["witness.test/w1"].startswith("refused: ")
    assert not WitnessCosignature.objects.exists()


# --- The k-of-n policy ---------------------------------------------------------------------


def test_quorum_k_of_n_and_its_grace(witness: WitnessKey, append: Callable[..., Any], settings: Any) -> None:
    absent = WitnessKey.generate("witness.test/w2")
    settings.LEDGER_WITNESSES = [*settings.LEDGER_WITNESSES, {"key": absent.verifier().encode(), "url": "http://w2"}]
    append(3)
    checkpoint_create()

    def only_w1(url: str, body: bytes, timeout: float) -> tuple[int, str, str]:
        if url.startswith("http://w2"):
            raise WitnessUnavailable("w2 is down")
        return over_client(url, body, timeout)

    with pytest.raises(WitnessUnavailable, match="w2 is down"):
        witness_latest(transport=only_w1)
    assert WitnessCosignature.objects.count() == 1
    settings.LEDGER_WITNESS_QUORUM = 2
    assert check_quorum().witnessed_size == -1  # the checkpoint is younger than the grace
    settings.LEDGER_WITNESS_GRACE_S = 0
    with pytest.raises(VerificationFailed, match="not covered by a checkpoint co-signed by 2 of the 2 witnesses"):
        check_quorum()
    settings.LEDGER_WITNESS_QUORUM = 1
    outcome = check_quorum()
    assert (outcome.witnessed_size, outcome.witnessed_by) == (3, ["witness.test/w1"])


def test_a_forged_cosignature_is_refused(witness: WitnessKey, append: Callable[..., Any]) -> None:
    append(3)
    checkpoint = checkpoint_create()
    witness_latest(transport=over_client)
    genuine = WitnessCosignature.objects.get().line
    # Another key signs in the witness's name and key ID: the line matches the witness, the signature does not.
    impostor = WitnessKey.generate(witness.name)
    timestamp = (1).to_bytes(8, "big")
    signature = impostor.sign(b"cosignature/v1\ntime 1\n" + note_body(checkpoint.note).encode())
    forged = f"\u2014 {witness.name} {base64.b64encode(witness.key_id + timestamp + signature).decode()}\n"
    assert forged != genuine
    with pytest.raises(VerificationFailed, match="does not verify"):
        check_quorum([("forged", checkpoint.note + forged)])
    # A co-signature moved onto another checkpoint does not verify either.
    append(1)
    other = checkpoint_create()
    with pytest.raises(VerificationFailed, match="does not verify"):
        check_quorum([("moved", other.note + genuine)])


# --- The split view ------------------------------------------------------------------------


def test_a_split_view_is_refused_by_the_witness_the_service_and_the_offline_verifier(
    witness: WitnessKey, append: Callable[..., Any], tmp_path: Path
) -> None:
    append(6)
    honest = checkpoint_create()
    assert witness_latest(transport=over_client) == {"witness.test/w1": "co-signed"}
    pinned = ["--key", signer().verifier().encode(), "--witness", witness.verifier().encode(), "--witness-quorum", "1"]
    code, output = verify_offline(export(tmp_path, "honest"), *pinned)
    assert code == 0, output
    assert "OK 6 entries, 1 checkpoints verified" in output
    assert "witnessed: 1 co-signed checkpoints verified; the tree of size 6 is co-signed by witness.test/w1" in output
    assert check_quorum().witnessed_size == 6

    # The operator shows another tree of the same size: the witness refuses to co-sign it.
    fork = forked_note(6)
    answer = post(request_body(6, [], fork))
    assert answer.status_code == 409 and answer.content == b"6\n"
    assert "split view" in WitnessConflict.objects.get().reason

    # A witness shown the other tree first co-signs it and then refuses the honest one; the
    # honest log learns it, and its verification refuses a co-signature of a tree it does not hold.
    WitnessedLog.objects.all().delete()
    fork_line = post(request_body(0, [], fork)).content.decode()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ledger_witnesscosignature")
    with pytest.raises(WitnessRefused, match="a different tree of size 6 for this log: a split view"):
        witness_submit(witness=configured_witnesses()[0], checkpoint=honest, transport=over_client)
    WitnessCosignature.objects.create(
        checkpoint=honest, witness=witness.verifier().encode(), tree_size=6, note=fork, line=fork_line,
        timestamp=0, received_at=honest.created_at,
    )  # fmt: skip
    with pytest.raises(VerificationFailed, match="split view: witnesses co-signed another tree of size 6"):
        check_quorum()

    # Offline: the bundle carries that co-signed note; its root is not the entries' root.
    code, output = verify_offline(export(tmp_path, "forked"), *pinned)
    assert code == 1 and output.startswith("FAIL witnessed/000000000006-1.note (size 6)"), output
    assert "does not match the root of entries 0..5" in output
    # Without any co-signature of the witness, the quorum is not met.
    bare = export(tmp_path, "bare")
    for path in (bare / "witnessed").iterdir():
        path.unlink()
    code, output = verify_offline(bare, *pinned)
    assert code == 1 and "no checkpoint carries co-signatures of 1 of the 1 configured witnesses" in output


def test_the_offline_verifier_refuses_a_quorum_it_cannot_check(tmp_path: Path, append: Callable[..., Any]) -> None:
    append(1)
    checkpoint_create()
    bundle = export(tmp_path)
    code, output = verify_offline(bundle, "--witness-quorum", "1")
    assert code == 2 and "--witness-quorum 1 needs at least that many --witness keys" in output
    code, output = verify_offline(bundle, "--witness", signer().verifier().encode())
    assert code == 2 and "not an Ed25519 cosignature/v1 key" in output
    code, output = verify_offline(bundle)
    assert code == 0 and "witness" not in output  # no witnesses configured: as before


# --- Configuration -------------------------------------------------------------------------


SETTINGS_PROBE = """
import json, os, sys
from django.conf import settings
from config.env import SettingError
from config.settings import witness
outcome = {"good": [settings.LEDGER_WITNESSES, sorted(settings.LEDGER_WITNESSED_LOGS)], "bad": []}
for variable, value in json.loads(sys.argv[1]):
    os.environ[variable] = value
    parse = witness._witnesses if variable == "LEDGER_WITNESSES" else witness._witnessed_logs
    try:
        parse(variable)
        outcome["bad"].append("accepted")
    except SettingError as exc:
        outcome["bad"].append(str(exc))
print(json.dumps(outcome))
"""


def test_witness_settings_are_parsed_and_bad_ones_named() -> None:
    """In a process of its own: the settings are read at start-up, from the environment."""
    key = WitnessKey.generate("w.example/1").verifier().encode()
    log_key = signer().verifier().encode()
    bad = [
        ("LEDGER_WITNESSES", key, "each witness is"),
        ("LEDGER_WITNESSES", f"{log_key} https://w", "type byte 0x04"),
        ("LEDGER_WITNESSES", f"{key} ftp://w", "each witness is"),
        ("LEDGER_WITNESSES", f"{key} https://a, {key} https://b", "listed twice"),
        ("LEDGER_WITNESSED_LOGS", "a.example/log", "each log is"),
        ("LEDGER_WITNESSED_LOGS", f"a.example/log {key}", "not an Ed25519 key"),
    ]
    env = subprocess_env(
        LEDGER_WITNESSES=f"{key} https://w.example/1/ ",
        LEDGER_WITNESSED_LOGS=f"a.example/log {log_key}, b.example/log {log_key} {log_key}",
        LEDGER_WITNESS_QUORUM="1",
    )
    cases = json.dumps([(variable, value) for variable, value, _ in bad])
    run = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE, cases], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout)
    assert outcome["good"] == [[{"key": key, "url": "https://w.example/1"}], ["a.example/log", "b.example/log"]]
    for (variable, _, message), error in zip(bad, outcome["bad"], strict=True):
        assert error.startswith(f"configuration error: {variable}: ") and message in error, error

    too_many = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; settings.LEDGER_WITNESSES"],
        cwd=ROOT, env={**env, "LEDGER_WITNESS_QUORUM": "2"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert too_many.returncode != 0
    assert "configuration error: LEDGER_WITNESS_QUORUM: 2 is more than the 1 LEDGER_WITNESSES" in too_many.stderr


def test_the_checkpoint_task_sends_witnessing_through_the_outbox(
    witness: WitnessKey, append: Callable[..., Any], settings: Any
) -> None:
    from audits.ledger.tasks import checkpoint_if_grown
    from common.outbox.models import OutboxJob

    append(2)
    assert checkpoint_if_grown() == 2
    assert list(OutboxJob.objects.values_list("task", flat=True)) == ["ledger.witness"]
    witness_latest(transport=over_client)
    assert checkpoint_if_grown() is None and OutboxJob.objects.count() == 1  # nothing pending: nothing sent
    settings.LEDGER_WITNESSES = []
    append(1)
    assert checkpoint_if_grown() == 3 and OutboxJob.objects.count() == 1  # no witnesses: as before


def test_the_bundle_json_counts_the_witnessed_checkpoints(
    witness: WitnessKey, append: Callable[..., Any], tmp_path: Path
) -> None:
    append(2)
    checkpoint_create()
    witness_latest(transport=over_client)
    bundle = export(tmp_path)
    assert json.loads((bundle / "bundle.json").read_text())["witnessed_checkpoints"] == 1
    assert (bundle / "witnesses.txt").read_text() == witness.verifier().encode() + "\n"
