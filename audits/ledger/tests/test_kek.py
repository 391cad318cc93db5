"""The vault's keys wrapped by a key-encryption key held outside the database (issue 29, item 5):
the file backend, the PKCS#11 backend against a real SoftHSM2 token, KEK rotation, and the errors
that name what is misconfigured."""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import runpy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection

from audits.ledger import kek
from audits.ledger.models import DataSubjectKey, Entry
from audits.ledger.selectors import root_at, tree_size
from audits.ledger.services import (
    ERASED,
    LedgerError,
    checkpoint_create,
    data_subject_erase,
    ledger_append,
    vault_open,
    vault_seal,
)
from conftest import require_tool

pytestmark = pytest.mark.django_db
SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN, PIN, SO_PIN = "vault-test", "4711-user", "4712-so"
SUBJECTS = [f"subject-{i:04d}" for i in range(5)]


@pytest.fixture
def kek_file(settings: Any, tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "vault-kek.key"
    settings.LEDGER_VAULT_KEK = "file"
    settings.LEDGER_VAULT_KEK_FILE = path
    return path


def _file_keks(path: Path) -> list[bytes]:
    return [base64.b64decode(line) for line in path.read_text().split()]


def _dump_everything() -> bytes:
    dump = b""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608
            for row in cursor.fetchall():
                dump += b"|".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row)
    return dump


def _ledger_state() -> tuple[list[tuple[int, bytes, bytes]], bytes]:
    """Every entry's bytes and the tree root: what a rotation must leave exactly as it was."""
    entries = [(e.index, bytes(e.body), bytes(e.leaf_hash)) for e in Entry.objects.order_by("index")]
    return entries, root_at(tree_size())


def _seal_world(actor: object) -> tuple[dict[str, dict[str, str]], str]:
    """Five subjects with sealed data in the ledger, the last one erased."""
    sealed = {ref: vault_seal(subject_ref=ref, value={"email": f"{ref}@example.org"}) for ref in SUBJECTS}
    for value in sealed.values():
        ledger_append(actor=actor, action="dataset_version.pii_found", payload={"who": value})
    data_subject_erase(actor=actor, subject_ref=SUBJECTS[-1], reason="GDPR Art. 17")
    checkpoint_create()
    return sealed, SUBJECTS[-1]


def _assert_opens(sealed: dict[str, dict[str, str]], erased: str) -> None:
    for ref, value in sealed.items():
        assert vault_open(value) == (ERASED if ref == erased else {"email": f"{ref}@example.org"})


# --- File backend ---------------------------------------------------------------------------------


def test_the_file_kek_is_made_at_the_first_seal_and_keys_are_stored_wrapped(kek_file: Path) -> None:
    assert not kek_file.exists()
    sealed = vault_seal(subject_ref=SUBJECTS[0], value={"email": "ada@example.org"})
    assert kek_file.stat().st_mode & 0o777 == 0o600
    (kek_value,) = _file_keks(kek_file)
    row = DataSubjectKey.objects.get(ref=SUBJECTS[0])
    assert row.kek_id == kek.file_kek_id(kek_value) and row.kek_id.startswith("file:")
    # Checked with cryptography alone: RFC 3394 under the file's KEK gives the subject's AES-GCM key.
    subject_key = aes_key_unwrap(kek_value, bytes(row.key))
    plaintext = AESGCM(subject_key).decrypt(
        base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]), SUBJECTS[0].encode()
    )
    assert json.loads(plaintext) == {"email": "ada@example.org"}
    dump = _dump_everything()
    assert subject_key not in dump and kek_value not in dump  # neither key is in the database
    vault_seal(subject_ref=SUBJECTS[1], value="x")  # the second seal reuses the file
    assert _file_keks(kek_file) == [kek_value]
    assert vault_open(sealed) == {"email": "ada@example.org"}


def test_a_missing_or_exposed_kek_file_is_named_and_never_replaced(kek_file: Path, actor: object) -> None:
    sealed = vault_seal(subject_ref=SUBJECTS[0], value="x")
    kek_file.chmod(0o640)
    with pytest.raises(LedgerError, match=r"LEDGER_VAULT_KEK_FILE: .*vault-kek.key is readable by others") as exc:
        vault_open(sealed)
    assert exc.value.code == "vault_kek_unavailable" and exc.value.status_code == 503
    kek_file.unlink()
    with pytest.raises(LedgerError, match=r"LEDGER_VAULT_KEK_FILE: .*vault-kek.key does not exist"):
        vault_open(sealed)
    with pytest.raises(LedgerError, match=r"does not exist, and 1 key\(s\) in the vault are wrapped by a file KEK"):
        vault_seal(subject_ref=SUBJECTS[1], value="y")  # a new KEK would open none of the old keys
    assert not kek_file.exists() and not DataSubjectKey.objects.filter(ref=SUBJECTS[1]).exists()
    # Erasure needs no KEK: a subject can be erased while the KEK is away.
    data_subject_erase(actor=actor, subject_ref=SUBJECTS[0], reason="GDPR Art. 17")
    assert DataSubjectKey.objects.get(ref=SUBJECTS[0]).key is None
    kek_file.parent.mkdir(exist_ok=True)
    kek_file.write_text("not-a-key\n")
    kek_file.chmod(0o600)
    with pytest.raises(LedgerError, match=r"vault-kek.key, line 1: not a base64 256-bit key"):
        vault_seal(subject_ref=SUBJECTS[1], value="y")


def test_an_altered_wrapped_key_is_refused(kek_file: Path) -> None:
    sealed = vault_seal(subject_ref=SUBJECTS[0], value="x")
    row = DataSubjectKey.objects.get(ref=SUBJECTS[0])
    DataSubjectKey.objects.filter(pk=row.pk).update(key=bytes(row.key)[:-1] + bytes([row.key[-1] ^ 1]))
    with pytest.raises(LedgerError, match=r"does not unwrap under KEK file:"):
        vault_open(sealed)


def test_rotation_file_to_file_rewraps_by_batches_resumably_and_touches_no_entry(kek_file: Path, actor: object) -> None:
    sealed, erased = _seal_world(actor)
    before = _ledger_state()
    (old,) = _file_keks(kek_file)

    new = kek.kek_new()
    assert _file_keks(kek_file)[0] == old and len(_file_keks(kek_file)) == 2
    _assert_opens(sealed, erased)  # mid-rotation: old rows open under the old KEK, still in the file

    class Interrupted(Exception):
        pass

    def stop(done: int) -> None:
        raise Interrupted(done)

    with pytest.raises(Interrupted):
        kek.kek_rotate(batch_size=2, progress=stop)  # killed after its first batch committed
    assert kek.kek_ids_in_use() == {kek.file_kek_id(old): 2, new.id: 2}
    _assert_opens(sealed, erased)

    out = io.StringIO()
    call_command("ledger", "rotate-kek", "--batch-size", "1", stdout=out)  # resumes
    assert "Re-wrapped 2 key(s); all 4 live key(s) of the vault are wrapped by " + new.id in out.getvalue()
    assert kek.kek_ids_in_use() == {new.id: 4}
    rewrapped = DataSubjectKey.objects.get(ref=SUBJECTS[0])
    assert aes_key_unwrap(_file_keks(kek_file)[1], bytes(rewrapped.key))  # really under the new KEK
    assert DataSubjectKey.objects.get(ref=erased).key is None
    _assert_opens(sealed, erased)
    assert _ledger_state() == before
    out = io.StringIO()
    call_command("ledger", "verify", stdout=out)
    assert out.getvalue().startswith(f"OK {len(before[0])} entries")


# --- PKCS#11 backend, against a real SoftHSM2 token -------------------------------------------------


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SoftHSM2 token initialised in a temporary folder, for this module's tests."""
    require_tool(SOFTHSM.is_file() and shutil.which("softhsm2-util") is not None, f"SoftHSM2 ({SOFTHSM})")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", SO_PIN],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    kek._pkcs11_forget()
    yield root
    kek._pkcs11_forget()
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture
def hsm_settings(softhsm: Path, settings: Any, kek_file: Path, request: pytest.FixtureRequest) -> Any:
    """The PKCS#11 settings of the token, with a key label of this test's own."""
    settings.LEDGER_PKCS11_MODULE = str(SOFTHSM)
    settings.LEDGER_PKCS11_TOKEN_LABEL = TOKEN
    settings.LEDGER_PKCS11_PIN = PIN
    settings.LEDGER_PKCS11_KEY_LABEL = f"kek-{request.node.name[-40:]}"
    return settings


def test_pkcs11_wraps_inside_the_token_as_rfc_3394_and_the_kek_never_leaves_it(hsm_settings: Any) -> None:
    from pkcs11 import Attribute, KeyType, ObjectClass

    created = kek.pkcs11_kek_create(TOKEN, hsm_settings.LEDGER_PKCS11_KEY_LABEL)
    assert created.id == f"pkcs11:{TOKEN}/{hsm_settings.LEDGER_PKCS11_KEY_LABEL}"
    session = kek._pkcs11_session(TOKEN)
    made = session.get_key(object_class=ObjectClass.SECRET_KEY, label=hsm_settings.LEDGER_PKCS11_KEY_LABEL)
    assert made[Attribute.SENSITIVE] and not made[Attribute.EXTRACTABLE] and made[Attribute.TOKEN]
    with pytest.raises(kek.KekError, match="already holds a key labelled"):
        kek.pkcs11_kek_create(TOKEN, hsm_settings.LEDGER_PKCS11_KEY_LABEL)

    # A KEK of known value put in the token: what the token wraps is byte for byte RFC 3394.
    known = os.urandom(32)
    session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: known,
        Attribute.TOKEN: False, Attribute.LABEL: "known-kek", Attribute.WRAP: True, Attribute.UNWRAP: True,
    })  # fmt: skip
    subject_key = os.urandom(32)
    in_token = kek.Pkcs11Kek(token_label=TOKEN, key_label="known-kek")
    assert in_token.wrap(subject_key) == aes_key_wrap(known, subject_key)
    assert in_token.unwrap(aes_key_wrap(known, subject_key)) == subject_key
    with pytest.raises(kek.KekError, match="does not unwrap under this KEK"):
        created.unwrap(aes_key_wrap(known, subject_key))


def test_seal_and_open_under_a_token_kek(hsm_settings: Any, actor: object) -> None:
    hsm_settings.LEDGER_VAULT_KEK = "pkcs11"
    with pytest.raises(LedgerError, match=r"LEDGER_PKCS11_KEY_LABEL: token 'vault-test' holds no AES key labelled"):
        vault_seal(subject_ref=SUBJECTS[0], value="x")
    call_command("ledger", "rotate-kek", "--new-key", stdout=io.StringIO())  # makes the KEK in the token
    sealed = vault_seal(subject_ref=SUBJECTS[0], value={"email": "ada@example.org"})
    row = DataSubjectKey.objects.get(ref=SUBJECTS[0])
    assert row.kek_id == f"pkcs11:{TOKEN}/{hsm_settings.LEDGER_PKCS11_KEY_LABEL}" and len(bytes(row.key)) == 40
    assert vault_open(sealed) == {"email": "ada@example.org"}
    data_subject_erase(actor=actor, subject_ref=SUBJECTS[0], reason="GDPR Art. 17")
    assert vault_open(sealed) == ERASED


def test_rotation_file_to_pkcs11_keeps_entries_and_erasures(hsm_settings: Any, kek_file: Path, actor: object) -> None:
    sealed, erased = _seal_world(actor)
    before = _ledger_state()
    hsm_settings.LEDGER_VAULT_KEK = "pkcs11"
    out = io.StringIO()
    call_command("ledger", "rotate-kek", "--new-key", "--batch-size", "3", stdout=out)
    target = f"pkcs11:{TOKEN}/{hsm_settings.LEDGER_PKCS11_KEY_LABEL}"
    assert f"all 4 live key(s) of the vault are wrapped by {target}" in out.getvalue()
    assert kek.kek_ids_in_use() == {target: 4}
    kek_file.unlink()  # the file KEK is no longer needed by any live key
    _assert_opens(sealed, erased)
    assert DataSubjectKey.objects.get(ref=erased).key is None
    assert _ledger_state() == before
    vault_seal(subject_ref="subject-new-1", value="y")  # new keys are wrapped by the token too
    assert DataSubjectKey.objects.get(ref="subject-new-1").kek_id == target


def test_pkcs11_misconfiguration_is_named(hsm_settings: Any) -> None:
    hsm_settings.LEDGER_VAULT_KEK = "pkcs11"
    kek.pkcs11_kek_create(TOKEN, hsm_settings.LEDGER_PKCS11_KEY_LABEL)
    kek._pkcs11_forget()  # log in afresh with the settings below
    hsm_settings.LEDGER_PKCS11_PIN = "0000-wrong"
    with pytest.raises(LedgerError, match=r"LEDGER_PKCS11_PIN: token 'vault-test' refused the PIN") as exc:
        vault_seal(subject_ref=SUBJECTS[0], value="x")
    assert exc.value.status_code == 503
    hsm_settings.LEDGER_PKCS11_PIN = PIN
    hsm_settings.LEDGER_PKCS11_TOKEN_LABEL = "no-such-token"
    with pytest.raises(LedgerError, match=r"LEDGER_PKCS11_TOKEN_LABEL: no token labelled 'no-such-token' .*vault-test"):
        vault_seal(subject_ref=SUBJECTS[0], value="x")
    hsm_settings.LEDGER_PKCS11_TOKEN_LABEL = TOKEN
    hsm_settings.LEDGER_PKCS11_MODULE = str(SOFTHSM.with_name("libmissing.so"))
    with pytest.raises(CommandError, match=r"LEDGER_PKCS11_MODULE: cannot load .*libmissing.so"):
        call_command("ledger", "rotate-kek", stdout=io.StringIO())
    assert not DataSubjectKey.objects.exists()


# --- Settings and the migration -------------------------------------------------------------------


def test_settings_refuse_a_bad_backend_and_an_incomplete_pkcs11(monkeypatch: pytest.MonkeyPatch) -> None:
    vault_settings = str(Path(__file__).resolve().parents[3] / "config" / "settings" / "vault.py")
    monkeypatch.setenv("LEDGER_VAULT_KEK", "hsm")
    with pytest.raises(SystemExit, match="configuration error: LEDGER_VAULT_KEK: expected file or pkcs11, got 'hsm'"):
        runpy.run_path(vault_settings)
    monkeypatch.setenv("LEDGER_VAULT_KEK", "pkcs11")
    monkeypatch.setenv("LEDGER_PKCS11_MODULE", str(SOFTHSM))
    monkeypatch.setenv("LEDGER_PKCS11_TOKEN_LABEL", TOKEN)
    monkeypatch.delenv("LEDGER_PKCS11_PIN", raising=False)
    with pytest.raises(SystemExit, match="error: LEDGER_PKCS11_PIN: is required when LEDGER_VAULT_KEK=pkcs11"):
        runpy.run_path(vault_settings)
    monkeypatch.delenv("LEDGER_VAULT_KEK")
    assert runpy.run_path(vault_settings)["LEDGER_VAULT_KEK"] == "file"  # the embedded default needs nothing


def test_the_migration_wraps_clear_keys_and_its_reverse_unwraps_them(kek_file: Path) -> None:
    migration = importlib.import_module("audits.ledger.migrations.0006_vault_key_wrapping")
    clear = os.urandom(32)
    DataSubjectKey.objects.create(ref=SUBJECTS[0], key=clear, created_at="2026-01-01T00:00:00Z")
    DataSubjectKey.objects.create(ref=SUBJECTS[1], key=None, created_at="2026-01-01T00:00:00Z")  # erased
    editor = type("Editor", (), {"connection": connection})()
    migration.wrap_clear_keys(apps, editor)
    row = DataSubjectKey.objects.get(ref=SUBJECTS[0])
    assert row.kek_id == kek.file_kek_id(_file_keks(kek_file)[0])
    assert aes_key_unwrap(_file_keks(kek_file)[0], bytes(row.key)) == clear
    assert DataSubjectKey.objects.get(ref=SUBJECTS[1]).kek_id == ""
    migration.unwrap_keys(apps, editor)
    row = DataSubjectKey.objects.get(ref=SUBJECTS[0])
    assert (bytes(row.key), row.kek_id) == (clear, "")


def test_the_startup_probe_names_the_problem(hsm_settings: Any, kek_file: Path) -> None:
    assert kek.kek_startup_problem() is None  # no file yet, and no key needs one
    vault_seal(subject_ref=SUBJECTS[0], value="x")
    assert kek.kek_startup_problem() is None
    kek_file.chmod(0o644)
    assert "readable by others" in (kek.kek_startup_problem() or "")
    hsm_settings.LEDGER_VAULT_KEK = "pkcs11"
    assert "LEDGER_PKCS11_KEY_LABEL: token 'vault-test' holds no AES key" in (kek.kek_startup_problem() or "")
    kek.pkcs11_kek_create(TOKEN, hsm_settings.LEDGER_PKCS11_KEY_LABEL)
    assert kek.kek_startup_problem() is None
