"""The content-addressed artifact store: a blob's name is the SHA-256 of its bytes.

Storing the same bytes twice keeps one blob. Blobs are written to a temporary file, fsynced and
renamed into place, so a reader never sees a partial blob. The embedded default is a local folder
(``ARTIFACT_ROOT``); an object store mounted as a folder works the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class ArtifactMissing(Exception):
    """A blob the database names is not in the store."""


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


def open_blob(digest: str) -> Path:
    """The path of an existing blob, checked against its name; raises ``ArtifactMissing``."""
    path = blob_path(digest)
    if not path.is_file():
        raise ArtifactMissing(f"blob {digest} is missing from the artifact store")
    return path


def verify_blob(digest: str) -> bool:
    sha = hashlib.sha256()
    with open_blob(digest).open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest() == digest
