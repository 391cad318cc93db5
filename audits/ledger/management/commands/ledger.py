"""python manage.py ledger <command>: administer the ledger.

- ``keygen [--if-missing]``: create the signing key file (mode 0600) with a new Ed25519 key, and
  add its public half to the trusted keys file (``LEDGER_TRUSTED_KEYS_FILE``); with
  ``--if-missing`` and a key present, only make sure its public half is trusted.
- ``rotate-key``: add a new key beside the current ones; from now on both sign every checkpoint.
  Its public half is added to the trusted keys file.
- ``retire-key KEY_ID``: stop signing with a key; its public key stays published and trusted.
- ``checkpoint [--force]``: sign a checkpoint of the current tree now.
- ``verify [--incremental]``: re-hash every entry, rebuild every root, check every checkpoint (under the trusted
  keys only) and consistency step; exit 0 when all holds, 1 naming the first entry or checkpoint
  that fails. A key published in the database that is not trusted is named. With
  ``--incremental``, only what follows the last checkpoint the latest passing run covered.
- ``integrate [--follow]``: add the entries recorded by deferred sequencing to the tree (PostgreSQL);
  with ``--follow``, keep doing it as they come (what each Celery worker starts beside itself).
- ``witness-key``: print this service's witness verifier key (C2SP cosignature/v1), creating the
  witness key file (``LEDGER_WITNESS_KEY_FILE``, mode 0600) if missing; give it to the operators of
  the logs this service witnesses (``LEDGER_WITNESSED_LOGS``).
- ``export DIR``: write a bundle that ``python -m audits.verify DIR`` checks without the service.
- ``rotate-kek [--new-key] [--batch-size N]``: re-wrap every live vault key under the current
  key-encryption key (``LEDGER_VAULT_KEK``), batch by batch; rerun it to resume. ``--new-key`` first
  makes a new KEK (a new line of the key file, or a key in the token under
  ``LEDGER_PKCS11_KEY_LABEL``). No ledger entry is touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audits.ledger.keys import KeyFileError, SignerKey, load_signer_keys, trust_verifier_keys, write_signer_keys


class Command(BaseCommand):
    help = "Administer the ledger: keygen, rotate-key, retire-key, checkpoint, verify, export, rotate-kek."
    # keygen must run before anything else exists, including a valid key for the system check.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        keygen = sub.add_parser("keygen", help="create the signing key file with a new Ed25519 key")
        keygen.add_argument("--if-missing", action="store_true", help="do nothing when the key file exists")
        sub.add_parser("rotate-key", help="add a new signing key; both keys sign during the overlap")
        retire = sub.add_parser("retire-key", help="stop signing with a key (it stays published)")
        retire.add_argument("key_id", help="the 8 hex digits of the key id")
        checkpoint = sub.add_parser("checkpoint", help="sign a checkpoint of the current tree")
        checkpoint.add_argument("--force", action="store_true", help="sign even if the tree has not grown")
        verify = sub.add_parser("verify", help="verify every entry, root, checkpoint and consistency step")
        verify.add_argument(
            "--incremental", action="store_true",
            help="only what follows the last checkpoint that the latest (passing) verification covered",
        )  # fmt: skip
        integrate = sub.add_parser("integrate", help="add the entries recorded since to the tree (deferred sequencing)")
        integrate.add_argument("--follow", action="store_true", help="keep integrating as entries come")
        integrate.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # stop when this process is gone
        sub.add_parser("witness-key", help="print this service's witness verifier key (made if missing)")
        export = sub.add_parser("export", help="write a bundle for offline verification")
        export.add_argument("directory", type=Path)
        rotate_kek = sub.add_parser(
            "rotate-kek", help="re-wrap every live vault key under the current key-encryption key (resumable)"
        )
        rotate_kek.add_argument("--new-key", action="store_true", help="first make a new KEK, which wraps from now on")
        rotate_kek.add_argument("--batch-size", type=int, default=500, help="keys re-wrapped per transaction")
        grant = sub.add_parser(
            "grant-app-role",
            help="PostgreSQL: give the application's role what it needs, and no UPDATE, DELETE or TRUNCATE "
            "on the ledger's append-only tables (run by the owner after each migrate)",
        )
        grant.add_argument("role", help="the role the web and worker processes connect as")

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        getattr(self, f"_{subcommand.replace('-', '_')}")(**options)

    def _grant_app_role(self, *, role: str, **_: Any) -> None:
        from django.db import connection

        from audits.ledger.triggers import app_role_grants

        if connection.vendor != "postgresql":
            raise CommandError(f"grant-app-role is for PostgreSQL; this database is {connection.vendor}")
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            if cursor.fetchone() is None:
                raise CommandError(f"no PostgreSQL role {role!r}: create it first (CREATE ROLE {role} LOGIN ...)")
            for sql in app_role_grants(role, connection.settings_dict["NAME"]):
                cursor.execute(sql)
        self.stdout.write(f"{role}: read and write on the service's tables; append only on the ledger's")

    def _witness_key(self, **_: Any) -> None:
        from audits.ledger.witness.keys import witness_key

        try:
            key = witness_key()
        except (KeyFileError, OSError) as exc:
            raise CommandError(f"witness key file {settings.LEDGER_WITNESS_KEY_FILE}: {exc}") from None
        self.stdout.write(key.verifier().encode())

    def _signers(self) -> list[SignerKey]:
        try:
            return load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)
        except KeyFileError as exc:
            raise CommandError(str(exc)) from None

    def _keygen(self, *, if_missing: bool, **_: Any) -> None:
        path = settings.LEDGER_SIGNING_KEY_FILE
        if path.exists():
            if not if_missing:
                raise CommandError(f"{path} exists; to add a key alongside, use `ledger rotate-key`")
            signers = self._signers()
            self.stdout.write(f"Signing key file present: {path} ({len(signers)} key(s))")
            self._trust(signers)
            return
        signer = SignerKey.generate(settings.LEDGER_ORIGIN)
        write_signer_keys(path, [signer])
        self.stdout.write(f"Created {path} (mode 600). Verifier key: {signer.verifier().encode()}")
        self._trust([signer])

    def _trust(self, signers: list[SignerKey]) -> None:
        """Put the public half of ``signers`` among the trusted keys (configuration, not the database)."""
        path = settings.LEDGER_TRUSTED_KEYS_FILE
        try:
            added = trust_verifier_keys(path, [s.verifier() for s in signers])
        except KeyFileError as exc:
            raise CommandError(f"trusted keys file {path}: {exc}") from None
        if added:
            self.stdout.write(f"Trusted verifier key(s) {', '.join(k.key_id.hex() for k in added)} added to {path}")

    def _rotate_key(self, **_: Any) -> None:
        signers = self._signers()
        new = SignerKey.generate(settings.LEDGER_ORIGIN)
        self._trust([*signers, new])  # trusted before it signs anything
        write_signer_keys(settings.LEDGER_SIGNING_KEY_FILE, [*signers, new])
        self.stdout.write(
            f"Added key {new.key_id.hex()}; {len(signers) + 1} keys now sign every checkpoint. "
            f"Publish its verifier key: {new.verifier().encode()}\n"
            "Retire the old key with `ledger retire-key KEY_ID` once verifiers know the new one."
        )

    def _retire_key(self, *, key_id: str, **_: Any) -> None:
        from audits.ledger.models import PublishedKey

        signers = self._signers()
        keep = [s for s in signers if s.key_id.hex() != key_id.lower()]
        if len(keep) == len(signers):
            raise CommandError(
                f"no signing key with id {key_id}; present: {', '.join(s.key_id.hex() for s in signers)}"
            )
        if not keep:
            raise CommandError("refusing to retire the last signing key: rotate first")
        self._trust(signers)  # its checkpoints must still verify once it has left the signing key file
        write_signer_keys(settings.LEDGER_SIGNING_KEY_FILE, keep)
        PublishedKey.objects.filter(key_id=key_id.lower(), retired_at__isnull=True).update(retired_at=timezone.now())
        self.stdout.write(f"Retired key {key_id}; it no longer signs and stays published for verification.")

    def _integrate(self, *, follow: bool, parent: int | None, **_: Any) -> None:
        from audits.ledger.integrator import follow as follow_entries
        from audits.ledger.integrator import integrate_all, pending_count
        from audits.ledger.services import LedgerIntegrityError

        if settings.LEDGER_SEQUENCING != "deferred":
            self.stdout.write("Sequencing is inline: every entry joins the tree in its own transaction.")
            return
        try:
            if follow:
                follow_entries(parent=parent)
                return
            added = integrate_all()
        except LedgerIntegrityError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Integrated {added} entries; {pending_count()} recorded wait for a transaction still open.")

    def _checkpoint(self, *, force: bool, **_: Any) -> None:
        from audits.ledger.services import LedgerError, LedgerIntegrityError, checkpoint_create

        try:
            checkpoint = checkpoint_create(force=force)
        except (LedgerError, LedgerIntegrityError) as exc:
            raise CommandError(str(exc)) from None
        if checkpoint is None:
            self.stdout.write("The tree has not grown since the last checkpoint; nothing signed.")
        else:
            self.stdout.write(checkpoint.note)

    def _verify(self, *, incremental: bool, **_: Any) -> None:
        from tqdm import tqdm

        from audits.ledger.replay import VerificationFailed
        from audits.ledger.selectors import tree_size
        from audits.ledger.verification import ledger_verify, untrusted_published_keys

        total = tree_size()
        with tqdm(total=total, unit="entry", file=sys.stderr, disable=total < 65536 or None) as bar:

            def progress(done: int) -> None:
                bar.update(done - bar.n)

            try:
                result = ledger_verify(progress=progress, incremental=incremental)
            except VerificationFailed as failure:
                bar.close()
                self.stderr.write(f"FAIL {failure.where}: {failure.why}")
                sys.exit(1)
        since = f" from entry {result.verified_from} (the earlier ones verified before)" if result.verified_from else ""
        self.stdout.write(
            f"OK {result.tree_size} entries re-hashed{since}, {result.checkpoints_checked} checkpoint signatures and "
            f"every consistency step verified, under the trusted keys ({settings.LEDGER_TRUSTED_KEYS_FILE} and "
            "the signing key's public half)."
        )
        for line in untrusted_published_keys():
            self.stderr.write(
                f"warning: key {line} is published in the database but is not among the trusted keys: no "
                "checkpoint counts on its signature alone (add it to LEDGER_TRUSTED_KEYS_FILE if it is yours)"
            )

    def _rotate_kek(self, *, new_key: bool, batch_size: int, **_: Any) -> None:
        from audits.ledger.kek import KekError, kek_ids_in_use, kek_new, kek_rotate

        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, got {batch_size}")
        try:
            if new_key:
                self.stdout.write(f"New key-encryption key {kek_new().id}; it wraps every key from now on.")
            done, target = kek_rotate(
                batch_size=batch_size, progress=lambda n: self.stdout.write(f"{n} key(s) re-wrapped so far")
            )
        except KekError as exc:
            raise CommandError(f"{exc} (keys re-wrapped before this stay so; rerun to resume)") from None
        in_use = kek_ids_in_use()
        self.stdout.write(
            f"Re-wrapped {done} key(s); all {in_use.get(target, 0)} live key(s) of the vault are wrapped by {target}. "
            "Keep the older KEKs as long as a backup taken before now may be restored: its keys are wrapped by them."
        )

    def _export(self, *, directory: Path, **_: Any) -> None:
        from audits.ledger.export import ExportError, ledger_export

        try:
            manifest = ledger_export(directory)
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Exported {manifest['tree_size']} entries and {manifest['checkpoints']} checkpoints to {directory}. "
            f"Verify with: python -m audits.verify {directory}"
        )
