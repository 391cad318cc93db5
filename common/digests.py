"""Digests of governed subjects: SHA-256 over the RFC 8785 canonical JSON of their governed fields."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_digest(fields: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(rfc8785.dumps(fields)).hexdigest()
