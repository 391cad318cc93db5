"""Witness settings (audits/ledger/witness/), read into base.py after the ledger block, so VAR_DIR
and the LEDGER_* names above can be imported from config.settings.base here.

As a log (its checkpoints co-signed by others, C2SP tlog-witness):

- ``LEDGER_WITNESSES``: the witnesses, comma-separated, each ``<witness verifier key> <URL prefix>``
  (the key ``<name>+<key id hex>+<base64(0x04 || Ed25519 public key)>``; the checkpoint is POSTed to
  ``<URL prefix>/add-checkpoint``). Empty (the default): no witnesses.
- ``LEDGER_WITNESS_QUORUM``: how many of them must co-sign a checkpoint for ``ledger verify`` to
  count it witnessed (k of n); 0 (the default) requires none.
- ``LEDGER_WITNESS_GRACE_S``: with a quorum, a checkpoint older than this must be covered by a
  witnessed one (default 3600 s); younger ones may still be on their way to the witnesses.
- ``LEDGER_WITNESS_TIMEOUT_S``: the HTTP timeout of one submission (default 10 s).

As a witness of other logs (``POST /witness/add-checkpoint``):

- ``LEDGER_WITNESSED_LOGS``: the logs witnessed, comma-separated, each ``<origin> <log verifier
  key> [<log verifier key> ...]``. Empty (the default): the endpoint answers 404 for every origin.
- ``LEDGER_WITNESS_KEY_FILE``: this witness's own Ed25519 key (created, mode 0600, on first use);
  ``LEDGER_WITNESS_NAME`` names a key made that way (default ``<LEDGER_ORIGIN>/witness``).
"""

from __future__ import annotations

from config.env import SettingError, env_float, env_int, env_list, env_path, env_str
from config.settings.base import LEDGER_ORIGIN, LEDGER_SIGNING_KEY_FILE

__all__ = [
    "LEDGER_WITNESSED_LOGS",
    "LEDGER_WITNESSES",
    "LEDGER_WITNESS_GRACE_S",
    "LEDGER_WITNESS_KEY_FILE",
    "LEDGER_WITNESS_NAME",
    "LEDGER_WITNESS_QUORUM",
    "LEDGER_WITNESS_TIMEOUT_S",
]


def _witnesses(name: str) -> list[dict[str, str]]:
    from llmops_ledger_verify.cosignature import CosignerKey
    from llmops_ledger_verify.keys import KeyFileError

    witnesses = []
    for item in env_list(name, []):
        parts = item.split()
        if len(parts) != 2 or not parts[1].startswith(("http://", "https://")):
            raise SettingError(name, f"each witness is '<witness verifier key> <http(s) URL prefix>', got {item!r}")
        try:
            key = CosignerKey.decode(parts[0])
        except KeyFileError as exc:
            raise SettingError(name, str(exc)) from None
        witnesses.append({"key": key.encode(), "url": parts[1].rstrip("/")})
    if len({w["key"] for w in witnesses}) != len(witnesses):
        raise SettingError(name, "the same witness key is listed twice")
    return witnesses


def _witnessed_logs(name: str) -> dict[str, list[str]]:
    from llmops_ledger_verify.keys import KeyFileError, VerifierKey

    logs: dict[str, list[str]] = {}
    for item in env_list(name, []):
        origin, *keys = item.split()
        if not keys:
            raise SettingError(name, f"each log is '<origin> <log verifier key> [...]', got {item!r}")
        if origin in logs:
            raise SettingError(name, f"the origin {origin!r} is listed twice")
        try:
            logs[origin] = [VerifierKey.decode(key).encode() for key in keys]
        except KeyFileError as exc:
            raise SettingError(name, f"log {origin}: {exc}") from None
    return logs


LEDGER_WITNESSES = _witnesses("LEDGER_WITNESSES")
LEDGER_WITNESS_QUORUM = env_int("LEDGER_WITNESS_QUORUM", 0, minimum=0)
if LEDGER_WITNESS_QUORUM > len(LEDGER_WITNESSES):
    raise SettingError(
        "LEDGER_WITNESS_QUORUM", f"{LEDGER_WITNESS_QUORUM} is more than the {len(LEDGER_WITNESSES)} LEDGER_WITNESSES"
    )
LEDGER_WITNESS_GRACE_S = env_int("LEDGER_WITNESS_GRACE_S", 3600, minimum=0)
LEDGER_WITNESS_TIMEOUT_S = env_float("LEDGER_WITNESS_TIMEOUT_S", 10.0, minimum=0.1)
LEDGER_WITNESSED_LOGS = _witnessed_logs("LEDGER_WITNESSED_LOGS")
LEDGER_WITNESS_KEY_FILE = env_path("LEDGER_WITNESS_KEY_FILE", LEDGER_SIGNING_KEY_FILE.with_name("ledger-witness.key"))
LEDGER_WITNESS_NAME = env_str("LEDGER_WITNESS_NAME", f"{LEDGER_ORIGIN}/witness")
