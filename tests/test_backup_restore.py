"""The disaster-recovery drill: a service with real data is backed up, and the backup is restored
onto a clean machine, where its ledger verifies against the checkpoints kept off-site.

Each service is a whole one in its own temporary var/ (its own processes, its own settings); the
data is made through the real services. The negative cases run against the same clean machine
first: each must leave it untouched, which the good restore that follows (no --force) proves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from conftest import manage_in, require_tool, subprocess_env

# One data steward approves; no evidence is asked, so the drill needs no PII scan (Presidio takes
# 20 s to load). The policies live in each service's own POLICY_DIR, which the backup carries.
DRILL_POLICY = """\
action: dataset_version.use_for_training
rules:
  - approvals:
      - {role: data_steward, count: 1}
    separation_of_duties: {requester_may_approve: false, one_slot_per_person: true}
"""

SEED = """
from django.contrib.auth import get_user_model

from audits.ledger.services import checkpoint_create
from governance.permissions import SYSTEM_USERNAME
from governance.roles import Role
from governance.services import approval_request_decide, approval_request_submit, project_create, project_role_grant
from registry.services import dataset_create, dataset_version_upload

User = get_user_model()
system = User.objects.get(username=SYSTEM_USERNAME)
project = project_create(actor=system, slug="assistant", name="Assistant")
steward = User.objects.create_user(username="data-steward")
engineer = User.objects.create_user(username="ml-engineer")
project_role_grant(actor=system, project=project, user=steward, role=Role.DATA_STEWARD, reason="drill")
project_role_grant(actor=system, project=project, user=engineer, role=Role.ML_ENGINEER, reason="drill")
dataset = dataset_create(
    actor=steward, project=project, slug="tickets", name="Tickets", purpose="fine-tune the assistant",
    lawful_basis="legitimate_interests", retention_days=365, source="helpdesk export", data_steward=steward,
)
checkpoint_create()
for n in range(3):
    data = ('{"text": "ticket %d, no personal data"}\\n' % n).encode() * (n + 1)
    version, _ = dataset_version_upload(actor=engineer, dataset=dataset, filename="tickets.jsonl", data=data)
    request = approval_request_submit(
        actor=engineer, subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training", comment="drill",
    )
    approval_request_decide(actor=steward, request_id=request.pk, decision="approve", reason="clean data")
print(checkpoint_create().tree_size)
"""


def _service(root: Path, *, migrate: bool = True, **env: str) -> dict[str, str]:
    """A fresh embedded-default service under ``root``: its var/, its policies, a key, migrated
    (unless ``migrate`` is false: a clean machine that has only its key)."""
    (root / "policies" / "audits").mkdir(parents=True)
    (root / "policies" / "dataset_version.use_for_training.yaml").write_text(DRILL_POLICY)
    for name in ("security.yaml", "bias.yaml"):  # the audit profiles the settings check asks for
        shutil.copy(Path(__file__).parent.parent / "policies" / "audits" / name, root / "policies" / "audits" / name)
    service = subprocess_env(
        embedded=True, GOV_VAR_DIR=str(root / "var"), POLICY_DIR=str(root / "policies"),
        DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING", **env,
    )  # fmt: skip
    for args in (("ledger", "keygen"), ("migrate", "--noinput"))[: 2 if migrate else 1]:
        result = manage_in(service, *args)
        assert result.returncode == 0, result.stderr
    return service


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def _blobs(var: Path) -> dict[str, bytes]:
    store = var / "artifacts" / "sha256"
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*") if p.is_file()}


def _row_counts(database: Path) -> dict[str, int]:
    counts = {}
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            # A restore records its verification run; that table is the one allowed to differ.
            if table not in ("ledger_verificationrun", "sqlite_sequence"):
                counts[table] = db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]  # noqa: S608
    return counts


def _rewrite_manifest_digest(backup: Path, rel: str) -> None:
    """What an attacker who can write the backup does after changing a file: fix the manifest."""
    manifest = json.loads((backup / "manifest.json").read_text())
    data = (backup / rel).read_bytes()
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (backup / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _drill_source(tmp_path: Path, **env: str) -> tuple[dict[str, str], Path, Path]:
    """The service to lose: data made through the services, the checkpoint log copied off-site, a
    backup. Returns its environment, the backup and the off-site checkpoint file."""
    source = _service(tmp_path / "source", **env)
    tree_size = int(_ok(manage_in(source, "shell", "-c", SEED)).split()[-1])
    assert tree_size > 10
    offsite = tmp_path / "offsite" / "ledger-checkpoints.jsonl"
    offsite.parent.mkdir()
    shutil.copy(Path(source["GOV_VAR_DIR"]) / "ledger-checkpoints.jsonl", offsite)  # kept off-site, as it is written

    (tmp_path / "not-empty").mkdir()
    (tmp_path / "not-empty" / "x").write_text("x")
    refused = manage_in(source, "backup", str(tmp_path / "not-empty"))
    assert refused.returncode != 0 and "is not empty" in refused.stderr

    backup = tmp_path / "backup"
    out = _ok(manage_in(source, "backup", str(backup)))
    assert "signing key is NOT in this backup" in out
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["ledger"]["tree_size"] == tree_size
    assert manifest["ledger"]["latest_checkpoint"]["tree_size"] == tree_size
    assert manifest["signing_key_included"] is False
    files = manifest["files"]
    assert "ledger-checkpoints.jsonl" in files and "keys/ledger-verifiers.txt" in files
    assert "policies/dataset_version.use_for_training.yaml" in files
    assert sum(rel.startswith("artifacts/sha256/") for rel in files) == 3
    signing_key = (Path(source["GOV_VAR_DIR"]) / "keys" / "ledger-signing.key").read_text()
    assert "PRIVATE+KEY" not in "".join(p.read_text(errors="replace") for p in backup.rglob("*") if p.is_file())
    # PRIVATE+KEY+<name>+<key id>+<base64 key>: the base64 itself may hold "+"
    assert signing_key.strip().split("+", 4)[4] not in "".join(
        p.read_text(errors="replace") for p in backup.rglob("*") if p.is_file()
    )
    return source, backup, offsite


def _install_signing_key(source: dict[str, str], target: dict[str, str]) -> None:
    """The clean machine gets the ledger's key from its own secure storage, not from the backup."""
    key = Path(target["GOV_VAR_DIR"]) / "keys" / "ledger-signing.key"
    shutil.copy(Path(source["GOV_VAR_DIR"]) / "keys" / "ledger-signing.key", key)
    os.chmod(key, 0o600)


@pytest.mark.own_service
def test_backup_and_restore_drill_on_the_embedded_default(tmp_path: Path) -> None:
    source, backup, offsite = _drill_source(tmp_path)
    target = _service(tmp_path / "target")
    target_var = Path(target["GOV_VAR_DIR"])
    _install_signing_key(source, target)

    # A file changed in the backup: refused before anything is written, naming the file.
    tampered = tmp_path / "tampered"
    shutil.copytree(backup, tampered)
    blob = next((tampered / "artifacts" / "sha256").rglob("*/*"))
    blob.write_bytes(blob.read_bytes() + b"\n")
    result = manage_in(target, "restore", str(tampered), "--checkpoints", str(offsite))
    assert result.returncode == 1
    assert f"backup file {blob.relative_to(tampered).as_posix()} was changed" in result.stderr
    (tampered / "policies" / "dataset_version.use_for_training.yaml").unlink()
    shutil.copy(backup / blob.relative_to(tampered), blob)
    result = manage_in(target, "restore", str(tampered), "--checkpoints", str(offsite))
    assert result.returncode == 1 and "backup file policies/dataset_version.use_for_training.yaml is missing" in (
        result.stderr
    )
    assert _blobs(target_var) == {}

    # The database changed by someone who also fixed the manifest: the off-site checkpoints catch it.
    altered = tmp_path / "altered"
    shutil.copytree(backup, altered)
    with sqlite3.connect(altered / "database" / "db.sqlite3") as db:
        db.execute("DROP TRIGGER ledger_entry_no_update")
        body = db.execute('SELECT body FROM ledger_entry WHERE "index" = 3').fetchone()[0]
        db.execute(
            'UPDATE ledger_entry SET body = ? WHERE "index" = 3', [body.replace(b'"action":"', b'"action":"x', 1)]
        )
    _rewrite_manifest_digest(altered, "database/db.sqlite3")
    result = manage_in(target, "restore", str(altered), "--checkpoints", str(offsite))
    assert result.returncode == 1
    assert "does NOT verify against" in result.stderr and "entry 3" in result.stderr, result.stderr
    assert not (target_var / "db.sqlite3.restoring").exists()

    # The real restore, onto the still clean machine.
    restored = manage_in(target, "restore", str(backup), "--checkpoints", str(offsite))
    out = _ok(restored)
    assert "OK restored and verified" in out and str(offsite) in out
    assert "there is no erasure journal at" in restored.stderr  # this machine was given none
    assert _row_counts(target_var / "db.sqlite3") == _row_counts(Path(source["GOV_VAR_DIR"]) / "db.sqlite3")
    assert _blobs(target_var) == _blobs(Path(source["GOV_VAR_DIR"])) and len(_blobs(target_var)) == 3
    assert (target_var / "ledger-checkpoints.jsonl").read_bytes() == offsite.read_bytes()
    assert (target_var / "subject-index-key").read_text() == (
        Path(source["GOV_VAR_DIR"]) / "subject-index-key"
    ).read_text()
    _ok(manage_in(target, "ledger", "checkpoint", "--force"))  # the restored service signs on
    assert "OK" in _ok(manage_in(target, "ledger", "verify"))

    # Now the target holds data: a second restore is refused unless forced.
    result = manage_in(target, "restore", str(backup), "--checkpoints", str(offsite))
    assert result.returncode == 1 and "the target is not empty" in result.stderr
    assert "ledger entries" in result.stderr


# A data subject whose identifier the ledger holds sealed; erased after the backup is taken.
SEAL = """
from django.contrib.auth import get_user_model

from audits.ledger.services import checkpoint_create, ledger_append, vault_seal
from governance.permissions import SYSTEM_USERNAME

system = get_user_model().objects.get(username=SYSTEM_USERNAME)
sealed = vault_seal(subject_ref="drill-subject-1", value={"email": "ada@example.org"})
ledger_append(actor=system, action="dataset_version.pii_found", payload={"who": sealed})
from django.utils import timezone
from governance.models import Project
from incidents.services import incident_register
incident_register(actor=system, project=Project.objects.get(slug="assistant"), title="Wrong invoice",
                  description="Ada Lovelace was shown another customer's invoice.", aware_at=timezone.now())
print(checkpoint_create().tree_size)
"""
ERASE = """
from django.contrib.auth import get_user_model
from django.utils import timezone

from audits.ledger.backup.journal import journal_append
from audits.ledger.services import data_subject_erase
from governance.permissions import SYSTEM_USERNAME
from registry.models import DatasetVersion

system = get_user_model().objects.get(username=SYSTEM_USERNAME)
data_subject_erase(actor=system, subject_ref="drill-subject-1", reason="GDPR Art. 17")
# What dsr_erase does to an incident naming the person (audits/privacy/tests cover that side).
from incidents.models import Incident
from incidents.services import incident_text_erase
incident_text_erase(actor=system, incident=Incident.objects.get(), reason="GDPR Art. 17",
                    find=lambda text: [(0, 12)] if text.startswith("Ada Lovelace") else [])
assert Incident.objects.get().description == "[erased] was shown another customer's invoice."
# What dsr_erase journals for a version whose records it removed (audits/privacy/tests cover that side).
blob = DatasetVersion.objects.order_by("pk").first().sha256
journal_append(blob=blob, erased_at=timezone.now())
print(blob)
"""
ERASED_AGAIN = """
import json

from audits.ledger.backup.journal import REAPPLIED_REASON
from audits.ledger.models import DataSubjectKey, Entry
from audits.ledger.services import ERASED, vault_open

row = DataSubjectKey.objects.get(ref="drill-subject-1")
sealed = next(
    json.loads(bytes(e.body))["payload"]["who"] for e in Entry.objects.filter(action="dataset_version.pii_found")
)
last = Entry.objects.filter(action="ledger.data_subject.erased").order_by("-index").first()
from incidents.models import Incident
incident = Incident.objects.get()
registered = Entry.objects.get(action="incident.registered")
print(json.dumps({"key": row.key is None, "erased_at": row.erased_at is not None, "open": vault_open(sealed) == ERASED,
                  "reason": json.loads(bytes(last.body))["payload"]["reason"] == REAPPLIED_REASON,
                  "incident": [incident.title, incident.description],
                  "incident_sealed": vault_open(json.loads(bytes(registered.body))["payload"]["description"])}))
"""


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``, each file with its SHA-256: what "left as it was" means."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.own_service
def test_restore_trusts_configured_keys_only_checks_blobs_by_name_and_reapplies_erasures(tmp_path: Path) -> None:
    """Issue 26, classes 12 and 15: another organisation's backup (another signing key) is refused
    unless the operator names the keys to trust; a blob that does not hash to its name is refused
    though the manifest was recomputed; a refused restore leaves the clean machine exactly as it
    was (no empty database file); a backup taken before an erasure comes back erased."""
    offsite_dir = tmp_path / "offsite"
    offsite_dir.mkdir()
    journal = offsite_dir / "ledger-erasures.jsonl"  # beside the off-site checkpoint log, as configured
    source = _service(tmp_path / "source", LEDGER_ERASURE_JOURNAL=str(journal))
    _ok(manage_in(source, "shell", "-c", SEED))
    _ok(manage_in(source, "shell", "-c", SEAL))
    source_var = Path(source["GOV_VAR_DIR"])
    offsite = offsite_dir / "ledger-checkpoints.jsonl"
    shutil.copy(source_var / "ledger-checkpoints.jsonl", offsite)
    backup = tmp_path / "backup"
    _ok(manage_in(source, "backup", str(backup)))
    erased_blob = _ok(manage_in(source, "shell", "-c", ERASE)).split()[-1]
    source_keys = source_var / "keys" / "ledger-signing.pub"  # the source's public half, from keygen
    assert source_keys.is_file()

    # A clean machine with a signing key of its own and nothing else.
    target = _service(tmp_path / "target", migrate=False, LEDGER_ERASURE_JOURNAL=str(journal))
    target_var = Path(target["GOV_VAR_DIR"])
    before = _snapshot(target_var)
    assert "db.sqlite3" not in before

    # A blob changed and the manifest recomputed: its bytes no longer hash to its name.
    tampered = tmp_path / "tampered"
    shutil.copytree(backup, tampered)
    blob = next((tampered / "artifacts" / "sha256").rglob("*/*"))
    blob.write_bytes(b'{"text": "ticket 0, rewritten"}\n')
    _rewrite_manifest_digest(tampered, blob.relative_to(tampered).as_posix())
    result = manage_in(
        target, "restore", str(tampered), "--checkpoints", str(offsite), "--trust-keys", str(source_keys)
    )
    assert result.returncode == 1 and "not to its name" in result.stderr, result.stderr
    assert _snapshot(target_var) == before

    # Another organisation's backup: refused, with or without off-site checkpoints, naming the flag
    # that says which keys to trust; the machine is left exactly as it was.
    for extra in ([], ["--checkpoints", str(offsite)]):
        result = manage_in(target, "restore", str(backup), *extra)
        assert result.returncode == 1, result.stdout
        assert "which this service does not trust" in result.stderr and "--trust-keys FILE" in result.stderr
        assert "--accept-loss" not in result.stderr and "--force" not in result.stderr
        assert _snapshot(target_var) == before

    # Told which keys to trust: restored and verified, and the erasure made after the backup is
    # made again before the service starts: the key is gone, the subject erased, the blob withheld.
    restored = manage_in(
        target, "restore", str(backup), "--checkpoints", str(offsite), "--trust-keys", str(source_keys)
    )
    out = _ok(restored)
    assert "OK restored and verified" in out
    assert "erasures re-applied from the journal: 2 data subject key(s)" in out
    assert "incidents: 1 whose free text an erasure blanked after this backup was taken (assistant/INC-1)" in out
    assert "erased after it (the erasure journal names them) and are not restored" in restored.stderr
    state = json.loads(_ok(manage_in(target, "shell", "-c", ERASED_AGAIN)).splitlines()[-1])
    # The backup held the incident's text from before the erasure: it comes back blanked whole (the
    # words that named the person are shredded with the erasure), and its sealed copy unreadable.
    assert state == {"key": True, "erased_at": True, "open": True, "reason": True,
                     "incident": ["[erased]", "[erased]"], "incident_sealed": "[erased]"}  # fmt: skip
    assert not (target_var / "artifacts" / "sha256" / erased_blob[:2] / erased_blob[2:]).exists()
    assert len(_blobs(target_var)) == 2
    # The keys the operator named are trusted from now on: the restored service verifies.
    assert source_keys.read_text().splitlines()[-1] in (target_var / "keys" / "ledger-signing.pub").read_text()
    _ok(manage_in(target, "ledger", "checkpoint", "--force"))
    assert "OK" in _ok(manage_in(target, "ledger", "verify"))


# Someone with the database's owner role rewrites entry 3 of the source, around the triggers.
TAMPER_PG = """
from django.db import connection

with connection.cursor() as cursor:
    cursor.execute("ALTER TABLE ledger_entry DISABLE TRIGGER ALL")
    cursor.execute('SELECT body FROM ledger_entry WHERE "index" = 3')
    body = bytes(cursor.fetchone()[0]).replace(b'"action":"', b'"action":"x', 1)
    cursor.execute('UPDATE ledger_entry SET body = %s WHERE "index" = 3', [body])
    cursor.execute("ALTER TABLE ledger_entry ENABLE TRIGGER ALL")
"""
ENTRIES = "from audits.ledger.models import Entry; print(Entry.objects.count())"


def _pg_database_url(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


@pytest.fixture
def postgres_databases() -> Iterator[tuple[str, str]]:
    """Two new, empty PostgreSQL databases (source and clean target) on the scale pass's server."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        pytest.skip("DATABASE_URL does not point at PostgreSQL (the scale pass runs this)")
    require_tool(
        shutil.which("pg_dump") is not None or bool(list(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))),
        "the PostgreSQL client tools (pg_dump, pg_restore)",
    )
    import psycopg

    names = [f"drill_{os.getpid()}_{role}" for role in ("source", "target")]
    with psycopg.connect(url, autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_database_url(url, names[0]), _pg_database_url(url, names[1])
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_backup_and_restore_drill_on_postgresql(tmp_path: Path, postgres_databases: tuple[str, str]) -> None:
    source_url, target_url = postgres_databases
    source, backup, offsite = _drill_source(tmp_path, DATABASE_URL=source_url)
    assert json.loads((backup / "manifest.json").read_text())["database"] == {
        "vendor": "postgresql",
        "file": "database/db.pgdump",
    }
    target = _service(tmp_path / "target", DATABASE_URL=target_url)
    _install_signing_key(source, target)

    tampered = tmp_path / "tampered"
    shutil.copytree(backup, tampered)
    (tampered / "database" / "db.pgdump").write_bytes((backup / "database" / "db.pgdump").read_bytes()[:-1])
    result = manage_in(target, "restore", str(tampered), "--checkpoints", str(offsite))
    assert result.returncode == 1 and "backup file database/db.pgdump was changed" in result.stderr

    # A backup whose ledger was changed in the database it was dumped from: verified in a scratch
    # database and refused there, so the target keeps its empty ledger (issue 26, class 12).
    _ok(manage_in(source, "shell", "-c", TAMPER_PG))
    altered = tmp_path / "altered"
    _ok(manage_in(source, "backup", str(altered)))
    result = manage_in(target, "restore", str(altered), "--checkpoints", str(offsite))
    assert result.returncode == 1 and "does NOT verify against" in result.stderr, result.stderr
    assert "do not start the service" not in result.stderr
    assert _ok(manage_in(target, "shell", "-c", ENTRIES)).split()[-1] == "0"

    out = _ok(manage_in(target, "restore", str(backup), "--checkpoints", str(offsite)))
    assert "OK restored and verified" in out
    assert _blobs(Path(target["GOV_VAR_DIR"])) == _blobs(Path(source["GOV_VAR_DIR"]))
    counts = "import json; from django.apps import apps; print(json.dumps({m._meta.label: m.objects.count() for m in apps.get_models() if m._meta.label != 'ledger.VerificationRun'}))"
    assert json.loads(_ok(manage_in(target, "shell", "-c", counts)).splitlines()[-1]) == json.loads(
        _ok(manage_in(source, "shell", "-c", counts)).splitlines()[-1]
    )
    assert "OK" in _ok(manage_in(target, "ledger", "verify"))
    result = manage_in(target, "restore", str(backup), "--checkpoints", str(offsite))
    assert result.returncode == 1 and "the target is not empty" in result.stderr
