"""A backup carries the report certificates (those reports were signed under, the signing chain,
the trust anchors) and never the report-signing key; a restore puts them back, merging the first
and leaving configured files it would change alone, with a warning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from audits.ledger.backup.create import REPORT_SIGNING_KEY_NOTE, _report_certificates_into
from audits.ledger.backup.layout import _BackupDir
from audits.ledger.backup.restore import _restore_report_certificates

KEY = b"-----BEGIN PRIVATE KEY-----\nreport-signing-key-bytes\n-----END PRIVATE KEY-----\n"


def _point(settings: Any, folder: Path, *, anchors: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    settings.REPORTS_CERTIFICATE_FILE = folder / "reports-certificate.pem"
    settings.REPORTS_SIGNING_CERTIFICATE_FILE = folder / "report-signing-certificate.pem"
    settings.REPORTS_SIGNING_KEY_FILE = folder / "report-signing-key.pem"
    settings.REPORTS_TRUST_ANCHORS_FILE = folder / "anchors.pem" if anchors else None


def test_the_report_certificates_travel_and_the_key_does_not(settings: Any, tmp_path: Path) -> None:
    _point(settings, tmp_path / "source")
    settings.REPORTS_CERTIFICATE_FILE.write_bytes(b"old ed25519 cert\nleaf cert\n")
    settings.REPORTS_SIGNING_CERTIFICATE_FILE.write_bytes(b"leaf cert\nintermediate cert\n")
    settings.REPORTS_TRUST_ANCHORS_FILE.write_bytes(b"root cert\n")
    settings.REPORTS_SIGNING_KEY_FILE.write_bytes(KEY)
    os.chmod(settings.REPORTS_SIGNING_KEY_FILE, 0o600)
    (tmp_path / "backup").mkdir()
    out, notes = _BackupDir(tmp_path / "backup"), []

    carried = _report_certificates_into(out, notes)

    assert sorted(out.files) == [
        "keys/report-signing-certificate.pem", "keys/reports-certificate.pem", "keys/reports-trust-anchors.pem",
    ]  # fmt: skip
    assert len(carried) == 3 and notes == [REPORT_SIGNING_KEY_NOTE]
    backed_up = b"".join(p.read_bytes() for p in (tmp_path / "backup").rglob("*") if p.is_file())
    assert b"report-signing-key-bytes" not in backed_up

    # The clean machine: no certificate files, no key yet.
    _point(settings, tmp_path / "target")
    said: list[str] = []
    warnings = _restore_report_certificates(out.root, out.files, said.append)
    assert settings.REPORTS_CERTIFICATE_FILE.read_bytes() == b"old ed25519 cert\nleaf cert\n"
    assert settings.REPORTS_SIGNING_CERTIFICATE_FILE.read_bytes() == b"leaf cert\nintermediate cert\n"
    assert settings.REPORTS_TRUST_ANCHORS_FILE.read_bytes() == b"root cert\n"
    assert len(said) == 3
    assert len(warnings) == 1 and "no report-signing key" in warnings[0] and "REPORTS_SIGNING_KEY_FILE" in warnings[0]

    # A machine configured otherwise: the certificates signed under merge; its chain is not overwritten.
    _point(settings, tmp_path / "other", anchors=False)
    settings.REPORTS_CERTIFICATE_FILE.write_bytes(b"its own cert\n")
    settings.REPORTS_SIGNING_CERTIFICATE_FILE.write_bytes(b"its own chain\n")
    settings.REPORTS_SIGNING_KEY_FILE.write_bytes(KEY)
    warnings = _restore_report_certificates(out.root, out.files, said.append)
    assert settings.REPORTS_CERTIFICATE_FILE.read_bytes() == b"its own cert\nold ed25519 cert\nleaf cert\n"
    assert settings.REPORTS_SIGNING_CERTIFICATE_FILE.read_bytes() == b"its own chain\n"
    assert len(warnings) == 2, warnings
    assert "REPORTS_SIGNING_CERTIFICATE_FILE" in warnings[0] and "differs" in warnings[0]
    assert "REPORTS_TRUST_ANCHORS_FILE is not set here" in warnings[1]
