"""Key and note formats, checked against golang.org/x/mod/sumdb/note's published example."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from audits.ledger import notes
from audits.ledger.keys import KeyFileError, SignerKey, VerifierKey, load_signer_keys, write_signer_keys

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

# The example of the Go note package's documentation (a public test key).
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="


def test_key_ids_and_signatures_match_the_go_implementation() -> None:
    signer = SignerKey.decode(GO_SIGNER)
    assert signer.verifier().encode() == GO_VERIFIER
    assert signer.encode() == GO_SIGNER
    assert base64.b64encode(signer.key_id + signer.sign(GO_TEXT)).decode() == GO_SIGNATURE
    verifier = VerifierKey.decode(GO_VERIFIER)
    assert verifier.verify(base64.b64decode(GO_SIGNATURE)[4:], GO_TEXT)
    assert not verifier.verify(base64.b64decode(GO_SIGNATURE)[4:], GO_TEXT.replace(b"answer", b"problem"))


def test_checkpoint_note_round_trip_and_rejections() -> None:
    first, second = SignerKey.generate("example.org/log"), SignerKey.generate("example.org/log")
    checkpoint = notes.Checkpoint(origin="example.org/log", size=42, root=bytes(range(32)))
    text = notes.sign(checkpoint, [first, second])
    lines = text.split("\n")
    assert lines[:4] == ["example.org/log", "42", base64.b64encode(bytes(range(32))).decode(), ""]
    assert lines[4].startswith("\u2014 example.org/log ") and lines[5].startswith("\u2014 example.org/log ")
    assert notes.verify(text, [first.verifier()]) == checkpoint
    assert notes.verify(text, [second.verifier()], origin="example.org/log") == checkpoint
    with pytest.raises(notes.NoteError, match="no signature by a known key"):
        notes.verify(text, [SignerKey.generate("example.org/log").verifier()])
    with pytest.raises(notes.NoteError, match="origin"):
        notes.verify(text, [first.verifier()], origin="other.org/log")
    forged = text.replace("\n42\n", "\n43\n")
    with pytest.raises(notes.NoteError, match="does not verify"):
        notes.verify(forged, [first.verifier()])
    with pytest.raises(notes.NoteError):
        notes.parse("example.org/log\n042\n" + lines[2] + "\n\n" + lines[4] + "\n")


def test_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    with pytest.raises(KeyFileError, match="does not exist"):
        load_signer_keys(path)
    write_signer_keys(path, [SignerKey.generate("example.org/log")])
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(load_signer_keys(path)) == 1
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="accessible to group or others"):
        load_signer_keys(path)
    os.chmod(path, 0o600)
    path.write_text("PRIVATE+KEY+broken\n")
    with pytest.raises(KeyFileError, match="line 1"):
        load_signer_keys(path)
