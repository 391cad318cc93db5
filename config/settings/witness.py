"""Witness settings (audits/ledger/witness/), read into base.py after the ledger block, so VAR_DIR
and the LEDGER_* names above can be imported from config.settings.base here."""

from __future__ import annotations
