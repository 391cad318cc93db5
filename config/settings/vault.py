"""Vault key-wrapping settings (the key-encryption key), read into base.py after the ledger block,
so VAR_DIR and the LEDGER_* names above can be imported from config.settings.base here.

Each data subject's key is stored in the database wrapped (RFC 3394 AES key wrap) by a
key-encryption key (KEK) kept outside it: ``audits/ledger/kek.py``.

- ``LEDGER_VAULT_KEK``: ``file`` (default) or ``pkcs11``: the backend whose KEK wraps new keys and
  receives every key at ``ledger rotate-kek``.
- ``LEDGER_VAULT_KEK_FILE``: the file backend's key file (default ``var/keys/vault-kek.key``, mode
  0600, made on the first wrap). Older KEKs stay in it, one a line, after a rotation.
- ``LEDGER_PKCS11_MODULE``, ``LEDGER_PKCS11_TOKEN_LABEL``, ``LEDGER_PKCS11_PIN`` (a secret; or
  ``LEDGER_PKCS11_PIN_FILE``), ``LEDGER_PKCS11_KEY_LABEL``: the PKCS#11 backend (an HSM, or
  SoftHSM2); the KEK is an AES-256 key in the token and never leaves it. Needed when the backend
  is ``pkcs11``, and also while keys wrapped by a token remain after a rotation back to a file.
"""

from __future__ import annotations

from pathlib import Path

from config.env import SettingError, env_optional_str, env_path, env_secret, env_str
from config.settings.base import VAR_DIR

LEDGER_VAULT_KEK = env_str("LEDGER_VAULT_KEK", "file").lower()
if LEDGER_VAULT_KEK not in {"file", "pkcs11"}:
    raise SettingError("LEDGER_VAULT_KEK", f"expected file or pkcs11, got {LEDGER_VAULT_KEK!r}")
LEDGER_VAULT_KEK_FILE = env_path("LEDGER_VAULT_KEK_FILE", VAR_DIR / "keys" / "vault-kek.key")

LEDGER_PKCS11_MODULE = env_optional_str("LEDGER_PKCS11_MODULE")
LEDGER_PKCS11_TOKEN_LABEL = env_optional_str("LEDGER_PKCS11_TOKEN_LABEL")
LEDGER_PKCS11_PIN = env_secret("LEDGER_PKCS11_PIN")
LEDGER_PKCS11_KEY_LABEL = env_str("LEDGER_PKCS11_KEY_LABEL", "llmops-vault-kek")

if LEDGER_VAULT_KEK == "pkcs11":
    for _name, _value in {
        "LEDGER_PKCS11_MODULE": LEDGER_PKCS11_MODULE,
        "LEDGER_PKCS11_TOKEN_LABEL": LEDGER_PKCS11_TOKEN_LABEL,
        "LEDGER_PKCS11_PIN": LEDGER_PKCS11_PIN,
    }.items():
        if _value is None:
            raise SettingError(_name, "is required when LEDGER_VAULT_KEK=pkcs11")
    if not Path(LEDGER_PKCS11_MODULE or "").is_file():
        raise SettingError(
            "LEDGER_PKCS11_MODULE", f"{LEDGER_PKCS11_MODULE} is not a file (the token's PKCS#11 library)"
        )
