"""The content-addressed store: a blob whose bytes changed on disk is never handed out as itself."""

from __future__ import annotations

import hashlib
import os

import pytest

from common import artifacts


def _stored(data: bytes) -> str:
    digest, _ = artifacts.put_bytes(data)
    return digest


def _streamed(digest: str) -> bytes:
    with artifacts.open_reader(digest) as reader:
        return b"".join(iter(lambda: reader.read(artifacts.CHUNK), b""))


def test_every_read_checks_the_bytes_against_the_name() -> None:
    data = os.urandom(3 * artifacts.CHUNK + 17)  # a few chunks, and unique to this test
    digest = _stored(data)
    assert artifacts.read_blob(digest) == data
    assert artifacts.open_blob(digest).read_bytes() == data
    assert _streamed(digest) == data
    assert artifacts.verify_blob(digest)

    blob = artifacts.blob_path(digest)
    blob.chmod(0o644)
    changed = data[:-1] + bytes([data[-1] ^ 1])
    blob.write_bytes(changed)
    actual = hashlib.sha256(changed).hexdigest()
    message = f"blob {digest} is corrupt: its bytes now hash to {actual}, not to its name"
    try:
        for read in (
            lambda: artifacts.read_blob(digest),
            lambda: artifacts.open_blob(digest),
            lambda: _streamed(digest),
        ):
            with pytest.raises(artifacts.ArtifactCorrupt) as caught:
                read()
            assert str(caught.value) == message
            assert isinstance(caught.value, artifacts.ArtifactMissing)  # every missing-blob handler refuses it
        assert artifacts.verify_blob(digest) is False
    finally:
        blob.unlink()
    with pytest.raises(artifacts.ArtifactMissing, match=f"blob {digest} is missing from the artifact store"):
        artifacts.read_blob(digest)
