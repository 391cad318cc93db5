"""Key rotation: an overlap in which both keys sign, then the old key retires but stays published."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from audits.ledger import notes
from audits.ledger.keys import VerifierKey, load_signer_keys
from audits.ledger.models import PublishedKey
from audits.ledger.services import checkpoint_create
from audits.ledger.tasks import checkpoint_if_grown

pytestmark = pytest.mark.django_db


@pytest.fixture
def key_file(settings: object, tmp_path: Path) -> Iterator[Path]:
    """A copy of the session's key file, so rotating it touches no other test."""
    path = tmp_path / "ledger-signing.key"
    shutil.copy(settings.LEDGER_SIGNING_KEY_FILE, path)  # type: ignore[attr-defined]
    path.chmod(0o600)
    settings.LEDGER_SIGNING_KEY_FILE = path  # type: ignore[attr-defined]
    settings.LEDGER_TRUSTED_KEYS_FILE = tmp_path / "ledger-signing.pub"  # type: ignore[attr-defined]
    yield path


def _signers_of(note: str) -> set[str]:
    return {sig.key_id.hex() for sig in notes.parse(note)[1]}


def test_rotation_overlap_and_retirement(key_file: Path, append: Callable[..., object], client: Client) -> None:
    old = load_signer_keys(key_file)[0]
    append(2)
    before = checkpoint_create()
    call_command("ledger", "rotate-key", stdout=io.StringIO())
    new = next(k for k in load_signer_keys(key_file) if k.key_id != old.key_id)
    append(2)
    overlap = checkpoint_create()
    assert before is not None and overlap is not None
    assert _signers_of(overlap.note) == {old.key_id.hex(), new.key_id.hex()}

    call_command("ledger", "retire-key", old.key_id.hex(), stdout=io.StringIO())
    assert [k.key_id for k in load_signer_keys(key_file)] == [new.key_id]
    append(2)
    after = checkpoint_create()
    assert after is not None and _signers_of(after.note) == {new.key_id.hex()}
    assert PublishedKey.objects.get(key_id=old.key_id.hex()).retired_at is not None

    published = [VerifierKey.decode(line) for line in client.get("/api/v1/ledger/keys").content.decode().splitlines()]
    assert {k.key_id for k in published} == {old.key_id, new.key_id}
    for checkpoint in (before, overlap, after):
        notes.verify(checkpoint.note, published, origin=settings.LEDGER_ORIGIN)
    out = io.StringIO()
    call_command("ledger", "verify", stdout=out)
    assert out.getvalue().startswith("OK 6 entries")

    with pytest.raises(CommandError, match="last signing key"):
        call_command("ledger", "retire-key", new.key_id.hex())
    with pytest.raises(CommandError, match="no signing key with id"):
        call_command("ledger", "retire-key", "deadbeef")


def test_the_periodic_task_signs_only_when_the_tree_grew(append: Callable[..., object]) -> None:
    assert "ledger-checkpoint" in settings.CELERY_BEAT_SCHEDULE
    assert settings.CELERY_BEAT_SCHEDULE["ledger-checkpoint"]["task"] == checkpoint_if_grown.name
    assert checkpoint_if_grown() is None
    append(3)
    assert checkpoint_if_grown() == 3
    assert checkpoint_if_grown() is None
    append(1)
    assert checkpoint_if_grown() == 4
