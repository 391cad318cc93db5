"""python manage.py ledger <command>: administer the ledger.

- ``keygen [--if-missing]``: create the signing key file (mode 0600) with a new Ed25519 key.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audits.ledger.keys import KeyFileError, SignerKey, load_signer_keys, write_signer_keys


class Command(BaseCommand):
    help = "Administer the ledger: keygen."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        keygen = sub.add_parser("keygen", help="create the signing key file with a new Ed25519 key")
        keygen.add_argument("--if-missing", action="store_true", help="do nothing when the key file exists")

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        getattr(self, f"_{subcommand.replace('-', '_')}")(**options)

    def _keygen(self, *, if_missing: bool, **_: Any) -> None:
        path = settings.LEDGER_SIGNING_KEY_FILE
        if path.exists():
            if not if_missing:
                raise CommandError(f"{path} exists; to add a key alongside, use `ledger rotate-key`")
            try:
                keys = load_signer_keys(path)
            except KeyFileError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"Signing key file present: {path} ({len(keys)} key(s))")
            return
        signer = SignerKey.generate(settings.LEDGER_ORIGIN)
        write_signer_keys(path, [signer])
        self.stdout.write(f"Created {path} (mode 600). Verifier key: {signer.verifier().encode()}")
