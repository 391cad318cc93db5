"""An erasure is journaled outside the database and its backups (issue 26, class 15): the keys it
shreds and the blobs it deletes, so a restore of an earlier backup erases them again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from audits.ledger.backup.journal import journal_read
from audits.privacy.services import dsr_erase
from audits.privacy.tests.test_requests import CONTACTS, ORDERS, _run_blob_deletions, _scanned_version, _searched
from common import artifacts

pytestmark = pytest.mark.django_db


@pytest.fixture
def datasets(people: dict[str, Any]) -> dict[str, Any]:
    """The two datasets holding Ana, scanned (as in test_requests)."""
    return {**people, "contacts": _scanned_version(people, "contacts", CONTACTS),
            "orders": _scanned_version(people, "orders", ORDERS)}  # fmt: skip


def test_an_erasure_journals_the_keys_it_shreds_and_the_blobs_it_deletes(
    datasets: dict[str, Any], settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    journal = tmp_path / "offsite" / "ledger-erasures.jsonl"
    settings.LEDGER_ERASURE_JOURNAL = journal
    contacts, orders = datasets["contacts"], datasets["orders"]
    request = _searched(datasets, "erasure")
    with django_capture_on_commit_callbacks() as after_commit:
        request = dsr_erase(actor=datasets["compliance_officer"], request=request)
    _run_blob_deletions(after_commit)
    lines = journal_read(journal)
    assert {line.blob for line in lines if line.blob} == {contacts.sha256, orders.sha256}
    assert not any(artifacts.blob_path(line.blob).exists() for line in lines if line.blob)
    assert {line.subject for line in lines if line.subject} == set(request.erasure["vault_keys_shredded"])
    assert all(line.entry is not None for line in lines if line.subject)
