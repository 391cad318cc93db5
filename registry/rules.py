"""Rules of the registry that change nothing and read no other row: the digest a dataset
version's approvals are given to, whether a version may be used, and the digest of a set of
weights. Services, governance hooks, serializers and other apps ask them here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from common.digests import canonical_digest
from registry.models import DatasetVersion, PiiVerdict, Review


def dataset_version_digest(version: DatasetVersion) -> str:
    """The governed fields of a version: content, format and the state of its PII review."""
    return canonical_digest(
        {
            "dataset": str(version.dataset),
            "number": version.number,
            "content_sha256": version.sha256,
            "format": version.format,
            "pii_verdict": version.pii_verdict,
            "review": version.review,
        }
    )


def use_status(version: DatasetVersion) -> tuple[bool, str]:
    """May this version be used (for training)? With the reason when it may not."""
    if version.erased_at is not None:
        return False, f"erased ({version.erased_reason}); use the version that replaced it"
    if version.pii_verdict == PiiVerdict.PENDING:
        return False, "the PII scan has not finished"
    if version.pii_verdict == PiiVerdict.FAILED:
        return False, "the PII scan failed; request a new scan"
    if version.pii_verdict == PiiVerdict.NONE:
        return True, "no personal data found"
    if version.review == Review.UNREVIEWED:
        return False, "personal data was found and a data steward has not reviewed it"
    if version.review == Review.ANONYMISATION_REQUIRED:
        return False, "a data steward requires an anonymised version"
    return True, f"personal data reviewed: {version.review}"


def weights_digest(files: dict[str, str]) -> str:
    """SHA-256 over the sorted ``<relative path> <file SHA-256>`` lines."""
    listing = "".join(f"{path} {digest}\n" for path, digest in sorted(files.items()))
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


@dataclass(frozen=True)
class Finding:
    """One location a scan kept: ``number`` is its place (from 1) in the scan's findings."""

    number: int
    entity: str
    record: int
    field: str
    start: int
    end: int
    score: float | None


def scan_findings(findings: dict[str, Any]) -> list[Finding]:
    """The locations a scan kept (up to ``PII_SAMPLE_LOCATIONS`` per entity type), numbered in a
    fixed order: by entity type, then as the scan kept them. A scan's findings never change once
    recorded, so a number names the same finding for good (marks and ledger entries use it).
    Scans recorded before scores were kept have none (``score`` is None)."""
    listed: list[Finding] = []
    for entity in sorted(findings):
        for sample in findings[entity].get("samples", []):
            listed.append(
                Finding(
                    number=len(listed) + 1, entity=entity, record=int(sample["record"]), field=str(sample["field"]),
                    start=int(sample["start"]), end=int(sample["end"]), score=sample.get("score"),
                )
            )  # fmt: skip
    return listed


def unlisted_findings(findings: dict[str, Any]) -> int:
    """How many findings the scan counted beyond the locations it kept."""
    return sum(int(f.get("count", 0)) - len(f.get("samples", [])) for f in findings.values())
