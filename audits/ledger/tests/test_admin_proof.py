"""The inclusion proof page of a ledger entry in the admin, its proof file, and the offline
verifier's check of that file, honest and tampered."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audits.ledger import notes, scopes
from audits.ledger.keys import load_signer_keys
from audits.ledger.models import Checkpoint
from audits.ledger.services import checkpoint_create
from audits.ledger.verification import known_verifiers
from common.testing import admin_login
from conftest import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def things_of_the_project(people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The entries ``append`` makes (subjects of type ``thing``) belong to the people's project,
    whose auditor and compliance officer read them (the admin's entry pages are scoped by project:
    tests/test_ledger_admin.py)."""
    monkeypatch.setitem(scopes._BY_TYPE, "thing", lambda subject_id: people["project"].pk)


def _proof_url(index: int) -> str:
    return reverse("admin:ledger_entry_proof", args=[index])


def _auditor(client: Client, people: dict[str, Any]) -> Client:
    admin_login(client, people["auditor"])
    return client


def verify_file(path: Path, *args: str) -> tuple[int, str]:
    """The offline verifier on a proof file, in a process where importing Django fails."""
    program = (
        "import runpy, sys; sys.modules['django'] = None; "
        f"sys.argv = ['audits.verify', {str(path)!r}] + {list(args)!r}; "
        "runpy.run_module('audits.verify', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def test_the_stable_url_of_an_entrys_proof() -> None:
    assert _proof_url(7) == "/admin/ledger/entry/7/proof/"
    assert reverse("admin:ledger_entry_proof_download", args=[7]) == "/admin/ledger/entry/7/proof/download/"


def test_a_covered_entry_shows_its_proof_verified_and_its_file_verifies_offline(
    client: Client, people: dict[str, Any], append: Callable[..., Any], tmp_path: Path
) -> None:
    first = append(6).index - 5  # people's setup appended entries before these
    checkpoint = checkpoint_create()
    assert checkpoint is not None
    index = first + 3
    _auditor(client, people)

    change = client.get(reverse("admin:ledger_entry_change", args=[index])).content.decode()
    assert f'href="{_proof_url(index)}"' in change

    page = client.get(_proof_url(index))
    assert page.status_code == 200
    text = page.content.decode()
    words = " ".join(text.split())
    proof = page.context["proof"]
    # The signing key: one of the log's published keys, named on the page by name and key ID.
    (signer,) = [k for k in known_verifiers() if k.encode() in proof.signer_keys]
    key_name = f"{signer.name}+{signer.key_id.hex()}"
    assert (
        f"This entry is included in the checkpoint of tree size {checkpoint.tree_size} signed by key {key_name}: "
        "verified." in words
    )
    assert 'id="proof-failed"' not in text
    assert len(proof.steps) == len(proof.document["proof_b64"]) > 0
    for step in proof.steps:  # the audit path is on the page, hash by hash
        assert f"<code>{step.hash_b64}</code>" in text
    assert checkpoint.note.split("\n")[0] in text  # the signed note's origin line
    assert f"ledger-verify ledger-entry-{index}-proof.json --key '{signer.encode()}'</pre>" in text

    download = client.get(reverse("admin:ledger_entry_proof_download", args=[index]))
    assert download.status_code == 200
    assert download["Content-Disposition"] == f'attachment; filename="ledger-entry-{index}-proof.json"'
    document = json.loads(download.content)
    assert (document["index"], document["tree_size"]) == (index, checkpoint.tree_size)
    assert document["checkpoint"] == checkpoint.note

    honest = tmp_path / "proof.json"
    honest.write_bytes(download.content)
    status, out = verify_file(honest, "--key", signer.encode())
    assert status == 0, out
    assert f"OK entry {index} is included in the checkpoint of tree size {checkpoint.tree_size} signed by" in out

    unpinned_status, unpinned = verify_file(honest)
    assert unpinned_status == 0 and "keys taken from the proof file" in unpinned


def _tampered(document: dict[str, Any], change: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    if change == "payload":  # the entry's bytes and readable copy rewritten together
        entry = copy["entry"]
        entry["payload"]["i"] = 99
        copy["body_b64"] = base64.b64encode(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()).decode()
        copy.pop("leaf_hash_b64")  # a forger leaves out what would give it away at once
    elif change == "path":
        first = bytearray(base64.b64decode(copy["proof_b64"][0]))
        first[0] ^= 1
        copy["proof_b64"][0] = base64.b64encode(bytes(first)).decode()
    elif change == "index":
        copy["index"] += 1
    elif change == "signature":
        lines = copy["checkpoint"].split("\n")  # origin, tree size, root, blank, signatures
        lines[1] = str(int(lines[1]) + 1)
        copy["checkpoint"] = "\n".join(lines)
    return copy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("payload", "not included in the signed tree"),
        ("path", "not included in the signed tree"),
        ("index", "its bytes say index"),
        ("signature", "FAIL checkpoint: the signature by"),
    ],
)
def test_a_tampered_proof_file_fails_offline(
    client: Client, people: dict[str, Any], append: Callable[..., Any], tmp_path: Path, change: str, message: str
) -> None:
    index = append(5).index - 2
    checkpoint_create()
    _auditor(client, people)
    document = json.loads(client.get(reverse("admin:ledger_entry_proof_download", args=[index])).content)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(_tampered(document, change)))
    status, out = verify_file(forged, *[arg for key in known_verifiers() for arg in ("--key", key.encode())])
    assert status == 1, out
    assert out.startswith("FAIL ") and message in out, out


def test_a_file_that_is_not_a_proof_is_named() -> None:
    path = ROOT / "pyproject.toml"
    status, out = verify_file(path)
    assert status == 1 and f"FAIL {path}: not JSON" in out


def test_an_entry_after_the_latest_checkpoint_says_so_and_when_the_next_is_due(
    client: Client, people: dict[str, Any], append: Callable[..., Any], settings: Any
) -> None:
    settings.LEDGER_CHECKPOINT_EVERY_S = 60
    append(3)
    checkpoint = checkpoint_create()
    assert checkpoint is not None
    index = append(2).index
    _auditor(client, people)
    page = client.get(_proof_url(index))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Not yet covered by a signed checkpoint" in text
    assert f"covers entries 0 to {checkpoint.tree_size - 1} (tree size {checkpoint.tree_size}" in text
    assert "every 60 seconds while the ledger grows: it is due by about" in text
    assert page.context["proof"].next_checkpoint_by > checkpoint.created_at
    assert "Download the proof file" not in text
    download = client.get(reverse("admin:ledger_entry_proof_download", args=[index]))
    assert download.status_code == 302 and download["Location"] == _proof_url(index)


def test_before_any_checkpoint_the_page_says_none_is_signed(client: Client, people: dict[str, Any]) -> None:
    _auditor(client, people)  # people's setup appended entries; nothing has signed them
    page = client.get(_proof_url(0))
    assert page.status_code == 200
    assert "No checkpoint has been signed yet." in page.content.decode()


@pytest.mark.parametrize("index", [10**6, 2**63, 10**30])
def test_an_unknown_entry_is_a_plain_404_page(client: Client, people: dict[str, Any], index: int) -> None:
    _auditor(client, people)
    for url in (_proof_url(index), reverse("admin:ledger_entry_proof_download", args=[index])):
        page = client.get(url)
        assert page.status_code == 404
        assert f"The ledger has no entry with index {index}" in page.content.decode()


def test_who_may_open_the_proof_page(client: Client, people: dict[str, Any], append: Callable[..., Any]) -> None:
    index = append(1).index
    checkpoint_create()
    url = _proof_url(index)
    assert client.get(url).status_code == 302  # anonymous: to the sign-in page
    for role, status in (("auditor", 200), ("compliance_officer", 200), ("ml_engineer", 403), ("data_steward", 403)):
        viewer = Client()
        admin_login(viewer, people[role])
        assert viewer.get(url).status_code == status, role
        assert viewer.get(reverse("admin:ledger_entry_proof_download", args=[index])).status_code == status, role


def test_a_stored_tree_that_disagrees_with_its_signed_checkpoint_is_shown_as_not_verifying(
    client: Client, people: dict[str, Any], append: Callable[..., Any], settings: Any
) -> None:
    """A checkpoint row whose signed root is not the stored tree's (what a rewritten table looks
    like against the signatures): the page says the proof does not verify, and why."""
    index = append(4).index
    honest = checkpoint_create()
    assert honest is not None
    wrong = notes.Checkpoint(origin=settings.LEDGER_ORIGIN, size=honest.tree_size, root=bytes(32))
    note = notes.sign(wrong, load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE))
    Checkpoint.objects.create(tree_size=honest.tree_size, root=wrong.root, note=note, created_at=timezone.now())
    _auditor(client, people)
    text = " ".join(client.get(_proof_url(index)).content.decode().split())
    assert "does not verify" in text
    assert f"entry {index}: not included in the signed tree of size {honest.tree_size}" in text
    assert 'id="proof-verified"' not in text
