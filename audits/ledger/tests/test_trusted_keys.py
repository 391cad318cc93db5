"""Trusted verifier keys come from configuration outside the database (issue 26, class 9): a key
that someone published in the database, and the checkpoints it signed, count for nothing."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction

from audits.ledger.keys import SignerKey, load_signer_keys, load_verifier_keys, write_signer_keys
from audits.ledger.models import Checkpoint, PublishedKey
from audits.ledger.replay import VerificationFailed
from audits.ledger.services import LedgerIntegrityError, checkpoint_create
from audits.ledger.verification import known_verifiers, ledger_verify, trusted_verifiers

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_keys(settings: object, tmp_path: Path) -> Path:
    """A copy of the session's signing key and a trusted keys file of this test's own."""
    path = tmp_path / "ledger-signing.key"
    shutil.copy(settings.LEDGER_SIGNING_KEY_FILE, path)  # type: ignore[attr-defined]
    path.chmod(0o600)
    settings.LEDGER_SIGNING_KEY_FILE = path  # type: ignore[attr-defined]
    settings.LEDGER_TRUSTED_KEYS_FILE = tmp_path / "ledger-signing.pub"  # type: ignore[attr-defined]
    return path


def _sign_with_foreign_key(settings: object, tmp_path: Path) -> SignerKey:
    """What someone who rewrote the database does: sign a checkpoint with a key of their own, which
    checkpoint_create publishes in the database, as a rotation would."""
    foreign = SignerKey.generate(settings.LEDGER_ORIGIN)  # type: ignore[attr-defined]
    foreign_file = tmp_path / "foreign.key"
    write_signer_keys(foreign_file, [foreign])
    own = settings.LEDGER_SIGNING_KEY_FILE  # type: ignore[attr-defined]
    settings.LEDGER_SIGNING_KEY_FILE = foreign_file  # type: ignore[attr-defined]
    try:
        assert checkpoint_create(force=True) is not None
    finally:
        settings.LEDGER_SIGNING_KEY_FILE = own  # type: ignore[attr-defined]
    return foreign


def test_a_checkpoint_signed_only_by_a_key_published_in_the_database_fails_verification(
    own_keys: Path, settings: object, tmp_path: Path, append: Callable[..., object]
) -> None:
    append(3)
    assert checkpoint_create() is not None
    ledger_verify()
    append(2)
    foreign = _sign_with_foreign_key(settings, tmp_path)
    assert PublishedKey.objects.filter(key_id=foreign.key_id.hex()).exists()
    assert foreign.verifier() not in known_verifiers()  # report verification's keys too

    with pytest.raises(VerificationFailed) as failure:
        ledger_verify()
    assert "no signature by a trusted key" in failure.value.why
    assert foreign.key_id.hex() in failure.value.why and "published in the database" in failure.value.why

    err = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("ledger", "verify", stdout=io.StringIO(), stderr=err)
    assert f"published in the database but not among the trusted keys ({settings.LEDGER_TRUSTED_KEYS_FILE}" in (  # type: ignore[attr-defined]
        err.getvalue()
    )


def test_ledger_verify_names_a_published_key_that_is_not_trusted(own_keys: Path, append: Callable[..., object]) -> None:
    append(2)
    checkpoint_create()
    stranger = SignerKey.generate(settings.LEDGER_ORIGIN).verifier()
    PublishedKey.objects.create(
        verifier=stranger.encode(), name=stranger.name, key_id=stranger.key_id.hex(), first_used_at=datetime.now(UTC)
    )
    out, err = io.StringIO(), io.StringIO()
    call_command("ledger", "verify", stdout=out, stderr=err)
    assert out.getvalue().startswith("OK 2 entries") and "under the trusted keys" in out.getvalue()
    assert f"warning: key {stranger.encode()} is published in the database but is not among the trusted keys" in (
        err.getvalue()
    )


def test_keygen_writes_the_public_half_beside_the_key_and_rotation_keeps_every_key_trusted(
    settings: object, tmp_path: Path, append: Callable[..., object]
) -> None:
    key_file = tmp_path / "keys" / "ledger-signing.key"
    settings.LEDGER_SIGNING_KEY_FILE = key_file  # type: ignore[attr-defined]
    settings.LEDGER_TRUSTED_KEYS_FILE = key_file.with_suffix(".pub")  # type: ignore[attr-defined]
    call_command("ledger", "keygen", stdout=io.StringIO())
    first = load_signer_keys(key_file)[0]
    trusted_file = tmp_path / "keys" / "ledger-signing.pub"
    assert load_verifier_keys(trusted_file) == [first.verifier()]
    assert trusted_file.stat().st_mode & 0o777 == 0o644

    append(2)
    checkpoint_create()
    call_command("ledger", "rotate-key", stdout=io.StringIO())
    second = next(k for k in load_signer_keys(key_file) if k.key_id != first.key_id)
    call_command("ledger", "retire-key", first.key_id.hex(), stdout=io.StringIO())
    assert set(load_verifier_keys(trusted_file)) == {first.verifier(), second.verifier()}
    append(1)
    checkpoint_create()
    assert set(trusted_verifiers()) == {first.verifier(), second.verifier()}
    assert ledger_verify().tree_size == 3  # the retired key's checkpoint still counts

    # An installation made before the file existed: keygen --if-missing writes it (make up runs it).
    trusted_file.unlink()
    call_command("ledger", "keygen", "--if-missing", stdout=io.StringIO())
    assert load_verifier_keys(trusted_file) == [second.verifier()]


def test_the_trust_anchors_default_to_files_beside_the_key_and_the_checkpoint_log() -> None:
    assert settings.LEDGER_TRUSTED_KEYS_FILE == settings.LEDGER_SIGNING_KEY_FILE.with_suffix(".pub")
    assert settings.LEDGER_ERASURE_JOURNAL == settings.VAR_DIR / "ledger-erasures.jsonl"


def test_a_logged_checkpoint_signed_by_a_key_only_the_database_publishes_is_not_adopted(
    own_keys: Path, settings: object, tmp_path: Path, append: Callable[..., object]
) -> None:
    """The signer that stopped between its log line and its row is recovered from the log only if
    a trusted key signed that line: a key written into the published-keys table does not count."""
    append(4)
    foreign = SignerKey.generate(settings.LEDGER_ORIGIN)  # type: ignore[attr-defined]
    foreign_file = tmp_path / "foreign.key"
    write_signer_keys(foreign_file, [foreign])
    settings.LEDGER_SIGNING_KEY_FILE = foreign_file  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError), transaction.atomic():  # the line is written, the row rolls back
        checkpoint_create()
        raise RuntimeError
    settings.LEDGER_SIGNING_KEY_FILE = own_keys  # type: ignore[attr-defined]
    verifier = foreign.verifier()
    PublishedKey.objects.create(
        verifier=verifier.encode(), name=verifier.name, key_id=verifier.key_id.hex(), first_used_at=datetime.now(UTC)
    )
    with pytest.raises(LedgerIntegrityError, match="does not verify"):
        checkpoint_create()
    assert not Checkpoint.objects.exists()
