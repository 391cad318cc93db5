"""Crypto-shredding: erasure destroys the subject's key; every hash, proof and checkpoint still holds."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from audits.ledger.models import DataSubjectKey, Entry
from audits.ledger.selectors import entry_decoded
from audits.ledger.services import (
    ERASED,
    LedgerError,
    checkpoint_create,
    data_subject_erase,
    ledger_append,
    vault_open,
    vault_seal,
)
from common.errors import Conflict

pytestmark = pytest.mark.django_db
SUBJECT = "subject-0001"
EMAIL = "ada.lovelace@example.org"


def _dump_everything() -> bytes:
    """Every byte of every table, as a determined reader of the database would see them."""
    dump = b""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608
            for row in cursor.fetchall():
                dump += b"|".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row)
    return dump


def test_erasure_makes_sealed_data_unreadable_and_keeps_the_ledger_verifiable(actor: object, client: Client) -> None:
    sealed = vault_seal(subject_ref=SUBJECT, value={"email": EMAIL})
    appended = ledger_append(actor=actor, action="dataset_version.pii_found", payload={"who": sealed, "count": 3})
    checkpoint_create()
    assert EMAIL.encode() not in _dump_everything()  # never in clear, anywhere
    assert vault_open(sealed) == {"email": EMAIL}
    key = bytes(DataSubjectKey.objects.get(ref=SUBJECT).key)

    erasure = data_subject_erase(actor=actor, subject_ref=SUBJECT, reason="GDPR Art. 17 request DSR-12")
    checkpoint_create()

    assert vault_open(sealed) == ERASED
    row = DataSubjectKey.objects.get(ref=SUBJECT)
    assert row.key is None and row.erased_at is not None
    assert key not in _dump_everything()
    entry = json.loads(Entry.objects.get(index=erasure.index).body)
    assert entry["action"] == "ledger.data_subject.erased"
    assert entry["subject"] == {"type": "data_subject", "id": SUBJECT, "digest": None}
    assert Entry.objects.get(index=appended.index).body == appended.body  # the sealed entry is untouched
    assert entry_decoded(Entry.objects.get(index=appended.index))["entry"]["payload"]["who"] == {
        "sealed": True,
        "subject": SUBJECT,
    }
    out = io.StringIO()
    call_command("ledger", "verify", stdout=out)
    assert out.getvalue().startswith("OK 2 entries")

    with pytest.raises(Conflict, match="already erased"):
        data_subject_erase(actor=actor, subject_ref=SUBJECT, reason="again")
    with pytest.raises(Conflict, match="was erased"):
        vault_seal(subject_ref=SUBJECT, value="new data")


def test_erasure_input_errors_change_nothing(actor: object) -> None:
    vault_seal(subject_ref=SUBJECT, value="x")
    with pytest.raises(LedgerError, match="needs a reason"):
        data_subject_erase(actor=actor, subject_ref=SUBJECT, reason=" ")
    with pytest.raises(LedgerError, match="no key for subject"):
        data_subject_erase(actor=actor, subject_ref="subject-unknown", reason="r")
    with pytest.raises(LedgerError, match="data-subject reference"):
        vault_seal(subject_ref="bad ref!", value="x")
    assert DataSubjectKey.objects.get(ref=SUBJECT).key is not None
    assert Entry.objects.count() == 0
