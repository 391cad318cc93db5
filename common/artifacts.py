"""The content-addressed artifact store: a blob's name is the SHA-256 of its bytes.

Storing the same bytes twice keeps one blob. Blobs are written to a temporary file, fsynced and
renamed into place, so a reader never sees a partial blob. Every read checks the bytes against the
name (``read_blob``, ``open_reader``, ``open_blob``): a blob changed on disk raises ``ArtifactCorrupt``
naming its digest, never hands out other bytes. The embedded default is a local folder
(``ARTIFACT_ROOT``); an object store mounted as a folder works the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class ArtifactMissing(Exception):
    """A blob the database names is not in the store (or not intact: ``ArtifactCorrupt``)."""


class ArtifactCorrupt(ArtifactMissing):
    """The file under a blob's name holds other bytes (changed on disk after it was stored): the
    content the name promises is gone, so every handler of ``ArtifactMissing`` refuses it too."""

    def __init__(self, digest: str, actual: str) -> None:
        super().__init__(f"blob {digest} is corrupt: its bytes now hash to {actual}, not to its name")
        self.digest, self.actual = digest, actual


def _root() -> Path:
    return Path(settings.ARTIFACT_ROOT)


def blob_path(digest: str) -> Path:
    if not _DIGEST.match(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    return _root() / "sha256" / digest[:2] / digest[2:]


def put_chunks(chunks: Iterable[bytes]) -> tuple[str, int]:
    """Store the concatenated ``chunks``; returns (hex SHA-256, size). Idempotent."""
    root = _root() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(dir=root)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        name = digest.hexdigest()
        target = blob_path(name)
        if target.exists():
            os.unlink(tmp_name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
        return name, size
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def put_bytes(data: bytes) -> tuple[str, int]:
    return put_chunks([data])


def _existing(digest: str) -> Path:
    path = blob_path(digest)
    if not path.is_file():
        raise ArtifactMissing(f"blob {digest} is missing from the artifact store")
    return path


class VerifiedReader:
    """A blob opened for reading that hashes what it reads: the read that reaches the end raises
    ``ArtifactCorrupt`` if the bytes were not the ones the name promises. Read to the end (as a
    copy does) or the check never happens."""

    def __init__(self, digest: str, handle: BinaryIO) -> None:
        self.digest, self._handle, self._sha, self._checked = digest, handle, hashlib.sha256(), False

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self._sha.update(chunk)
        if (size < 0 or (size > 0 and not chunk)) and not self._checked:
            self._checked = True
            if self._sha.hexdigest() != self.digest:
                raise ArtifactCorrupt(self.digest, self._sha.hexdigest())
        return chunk

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reader(digest: str) -> VerifiedReader:
    """The blob opened for a streaming read, checked against its name as it is read (one pass:
    for large blobs such as model weights). Raises ``ArtifactMissing`` or, at the end,
    ``ArtifactCorrupt``."""
    return VerifiedReader(digest, _existing(digest).open("rb"))


def read_blob(digest: str) -> bytes:
    """The blob's bytes, checked against its name: the very bytes returned are the ones hashed.
    Raises ``ArtifactMissing``, or ``ArtifactCorrupt`` when they changed on disk."""
    with open_reader(digest) as reader:
        return reader.read()


def open_blob(digest: str) -> Path:
    """The path of an existing blob whose bytes match its name now; raises ``ArtifactMissing``, or
    ``ArtifactCorrupt`` when they changed on disk.

    The check reads the whole blob once (SHA-256 runs at about 1.5 GB/s here: ~6 ms for 8 MiB)
    and says nothing about a change after it returns: read with ``read_blob`` or ``open_reader``,
    which check the very bytes they hand out, in one pass.
    """
    actual = _file_sha256(_existing(digest))
    if actual != digest:
        raise ArtifactCorrupt(digest, actual)
    return blob_path(digest)


def verify_blob(digest: str) -> bool:
    """Whether the blob's bytes still hash to its name; raises ``ArtifactMissing`` if it is gone."""
    return _file_sha256(_existing(digest)) == digest


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()
