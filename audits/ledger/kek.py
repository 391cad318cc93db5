"""The vault's key-encryption key (KEK): the data subjects' keys are stored wrapped by a key held
outside the database, in a file (the embedded default) or in a PKCS#11 token (an HSM).

Wrapping is AES key wrap (RFC 3394, ``CKM_AES_KEY_WRAP``) in both backends, so the same key gives
the same bytes whichever backend wrapped it:

- it is made for keys: no nonce to manage, and its integrity check refuses a wrong KEK or an
  altered row at unwrap;
- every PKCS#11 token does it inside the token (``C_WrapKey``/``C_UnwrapKey``), so the token's KEK
  never leaves it; AES-GCM in a token needs nonce handling the standard leaves to each vendor;
- a 32-byte key needs no padding (RFC 5649 is for other lengths).
The binding of a key to its subject is already given where it matters: each sealed value is
AES-GCM under the subject's key with the subject's reference as associated data, so a wrapped key
copied into another subject's row opens nothing of that subject.

Each row keeps the id of the KEK that wrapped it (``DataSubjectKey.kek_id``), so that rotation
(``ledger rotate-kek``) can run batch by batch while the service keeps reading:

- ``file:<16 hex>``: a KEK of the key file, named by a digest of it (never the key). The file holds
  one KEK a line, base64; the last line is the current one, earlier lines are KEKs that keys, or
  backups, may still be wrapped by. The file is made (mode 0600) at the first wrap, unless live keys
  are already wrapped by a file KEK: then a missing file is an error, never a silent new key.
- ``pkcs11:<token label>/<key label>``: an AES key in a token, found by its label, reached through
  ``LEDGER_PKCS11_MODULE`` with ``LEDGER_PKCS11_PIN``.

Every failure is a ``KekError`` whose message names the setting and what is wrong with it. No
unwrapped key is cached: an erased subject's key is unreadable the moment its row is.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from django.conf import settings
from django.db import DatabaseError

KEY_BYTES = 32
FILE_PREFIX = "file:"
PKCS11_PREFIX = "pkcs11:"

logger = logging.getLogger("audits.ledger")


class KekError(Exception):
    """The KEK cannot be had or refuses a key; the message names the setting at fault."""


class Kek(Protocol):
    id: str

    def wrap(self, key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise KekError(f"a vault key is {KEY_BYTES} bytes, got {len(key)}")


# --- File backend ---------------------------------------------------------------------------------


def file_kek_id(kek: bytes) -> str:
    return FILE_PREFIX + hashlib.sha256(b"llmops-governance vault KEK\n" + kek).hexdigest()[:16]


@dataclass(frozen=True)
class FileKek:
    id: str
    _kek: bytes

    @classmethod
    def of(cls, kek: bytes) -> FileKek:
        return cls(id=file_kek_id(kek), _kek=kek)

    def wrap(self, key: bytes) -> bytes:
        _check_key(key)
        return aes_key_wrap(self._kek, key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._kek, wrapped)
        except (InvalidUnwrap, ValueError):
            raise KekError(
                f"LEDGER_VAULT_KEK_FILE: a key does not unwrap under KEK {self.id} (the row was altered)"
            ) from None

    def __repr__(self) -> str:  # never the key
        return f"FileKek({self.id})"


def _file_keys(path: Path) -> list[FileKek]:
    """The KEKs of the key file, oldest first; the last is the current one."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KekError(f"LEDGER_VAULT_KEK_FILE: {path} does not exist") from None
    except OSError as exc:
        raise KekError(f"LEDGER_VAULT_KEK_FILE: cannot read {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KekError(f"LEDGER_VAULT_KEK_FILE: {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it")
    try:
        lines = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise KekError(f"LEDGER_VAULT_KEK_FILE: cannot read {path}: {exc}") from None
    keks = []
    for number, line in enumerate(lines, 1):
        try:
            raw = base64.b64decode(line, validate=True)
        except ValueError:
            raw = b""
        if len(raw) != KEY_BYTES:
            raise KekError(f"LEDGER_VAULT_KEK_FILE: {path}, line {number}: not a base64 256-bit key")
        keks.append(FileKek.of(raw))
    if not keks:
        raise KekError(f"LEDGER_VAULT_KEK_FILE: {path} holds no key")
    return keks


def file_kek_add(path: Path) -> FileKek:
    """Add a new KEK to the key file (made, mode 0600, if absent); it becomes the current one.
    The file is replaced atomically, so a crash leaves the old file or the new one."""
    keep = _file_keys(path) if path.exists() else []
    new = FileKek.of(os.urandom(KEY_BYTES))
    lines = "".join(base64.b64encode(k._kek).decode() + "\n" for k in [*keep, new])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(path.name + ".new")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except OSError as exc:
        raise KekError(f"LEDGER_VAULT_KEK_FILE: cannot write {path}: {exc.strerror or exc}") from None
    return new


def _current_file_kek(*, create: bool) -> FileKek:
    path: Path = settings.LEDGER_VAULT_KEK_FILE
    if path.exists() or not create:
        return _file_keys(path)[-1]
    from audits.ledger.models import DataSubjectKey

    wrapped = DataSubjectKey.objects.filter(kek_id__startswith=FILE_PREFIX, key__isnull=False).count()
    if wrapped:
        raise KekError(
            f"LEDGER_VAULT_KEK_FILE: {path} does not exist, and {wrapped} key(s) in the vault are wrapped by a "
            "file KEK: restore the file from where it is kept (a new one would open none of them)"
        )
    return file_kek_add(path)


# --- PKCS#11 backend ------------------------------------------------------------------------------

_pkcs11_lock = threading.RLock()
_pkcs11_libs: dict[tuple[int, str], Any] = {}
_pkcs11_sessions: dict[tuple[int, str, str], Any] = {}


def _pkcs11_lib(module: str) -> Any:
    import pkcs11

    key = (os.getpid(), module)
    if key not in _pkcs11_libs:
        try:
            _pkcs11_libs[key] = pkcs11.lib(module)
        except pkcs11.PKCS11Error as exc:
            raise KekError(f"LEDGER_PKCS11_MODULE: cannot load {module}: {exc}") from None
    return _pkcs11_libs[key]


def _pkcs11_session(token_label: str) -> Any:
    """A logged-in session on the token, kept for the process (a login per key costs the PIN's
    key derivation each time)."""
    import pkcs11
    from pkcs11 import exceptions as p11

    module, pin = settings.LEDGER_PKCS11_MODULE, settings.LEDGER_PKCS11_PIN
    if not module:
        raise KekError("LEDGER_PKCS11_MODULE: not set, and a PKCS#11 token is needed")
    if not pin:
        raise KekError("LEDGER_PKCS11_PIN: not set, and a PKCS#11 token is needed")
    key = (os.getpid(), module, token_label)
    if key in _pkcs11_sessions:
        return _pkcs11_sessions[key]
    lib = _pkcs11_lib(module)
    try:
        token = lib.get_token(token_label=token_label)
    except p11.NoSuchToken:
        lib.reinitialize()  # the slot list is read at initialisation: a token made since is seen now
        try:
            token = lib.get_token(token_label=token_label)
        except p11.NoSuchToken:
            present = sorted({slot.get_token().label for slot in lib.get_slots(token_present=True)})
            raise KekError(
                f"LEDGER_PKCS11_TOKEN_LABEL: no token labelled {token_label!r} in {module} "
                f"(tokens present: {', '.join(present) or 'none'})"
            ) from None
    try:
        session = token.open(user_pin=pin, rw=True)
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
        raise KekError(f"LEDGER_PKCS11_PIN: token {token_label!r} refused the PIN") from None
    except p11.PinLocked:
        raise KekError(f"LEDGER_PKCS11_PIN: the user PIN of token {token_label!r} is locked") from None
    except pkcs11.PKCS11Error as exc:
        raise KekError(f"LEDGER_PKCS11_TOKEN_LABEL: cannot open token {token_label!r}: {exc!r}") from None
    _pkcs11_sessions[key] = session
    return session


def _pkcs11_forget() -> None:
    """Drop this process's sessions (a token removed, a test that made a new one)."""
    with _pkcs11_lock:
        for key in [k for k in _pkcs11_sessions if k[0] == os.getpid()]:
            try:
                _pkcs11_sessions.pop(key).close()
            except Exception as exc:  # a session of a token that went away: nothing left to close
                logger.debug("closing a PKCS#11 session failed: %r", exc)


@dataclass(frozen=True)
class Pkcs11Kek:
    token_label: str
    key_label: str

    @property
    def id(self) -> str:
        return f"{PKCS11_PREFIX}{self.token_label}/{self.key_label}"

    def _key(self, session: Any) -> Any:
        from pkcs11 import KeyType, ObjectClass
        from pkcs11 import exceptions as p11

        try:
            return session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=self.key_label)
        except p11.NoSuchKey:
            raise KekError(
                f"LEDGER_PKCS11_KEY_LABEL: token {self.token_label!r} holds no AES key labelled {self.key_label!r} "
                "(`manage.py ledger rotate-kek --new-key` makes one)"
            ) from None
        except p11.MultipleObjectsReturned:
            raise KekError(
                f"LEDGER_PKCS11_KEY_LABEL: token {self.token_label!r} holds several AES keys labelled "
                f"{self.key_label!r}; a KEK label must name one key"
            ) from None

    def _run(self, what: str, operation: Any) -> Any:
        import pkcs11

        with _pkcs11_lock:
            for attempt in (1, 2):
                session = _pkcs11_session(self.token_label)
                try:
                    return operation(session, self._key(session))
                except pkcs11.exceptions.SessionHandleInvalid:
                    _pkcs11_forget()  # the token went away and came back: log in again, once
                    if attempt == 2:
                        raise KekError(
                            f"LEDGER_PKCS11_TOKEN_LABEL: token {self.token_label!r} lost its session"
                        ) from None
                except pkcs11.PKCS11Error as exc:
                    raise KekError(f"{self.id}: the token refused to {what} a key: {exc!r}") from None
        raise AssertionError("unreachable")

    def wrap(self, key: bytes) -> bytes:
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

        _check_key(key)

        def operation(session: Any, kek: Any) -> bytes:
            # The subject's key enters the token as a session object only long enough to be wrapped.
            subject_key = session.create_object({
                Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: key,
                Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True,
            })  # fmt: skip
            try:
                return bytes(kek.wrap_key(subject_key, mechanism=Mechanism.AES_KEY_WRAP))
            finally:
                subject_key.destroy()

        return self._run("wrap", operation)

    def unwrap(self, wrapped: bytes) -> bytes:
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
        from pkcs11 import exceptions as p11

        def operation(session: Any, kek: Any) -> bytes:
            try:
                subject_key = kek.unwrap_key(
                    ObjectClass.SECRET_KEY, KeyType.AES, wrapped, mechanism=Mechanism.AES_KEY_WRAP, store=False,
                    template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
                )  # fmt: skip
            except p11.PKCS11Error as exc:  # SoftHSM2 answers a failed integrity check with CKR_GENERAL_ERROR
                raise KekError(
                    f"{self.id}: a key does not unwrap under this KEK (the row was altered): {exc!r}"
                ) from None
            try:
                return bytes(subject_key[Attribute.VALUE])
            finally:
                subject_key.destroy()

        return self._run("unwrap", operation)


def pkcs11_kek_create(token_label: str, key_label: str) -> Pkcs11Kek:
    """Generate an AES-256 KEK in the token, under ``key_label``: it can wrap and unwrap, and can
    never be read out (sensitive, not extractable)."""
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11 import exceptions as p11

    with _pkcs11_lock:
        session = _pkcs11_session(token_label)
        try:
            session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=key_label)
        except p11.NoSuchKey:
            pass
        except p11.MultipleObjectsReturned:
            raise KekError(
                f"LEDGER_PKCS11_KEY_LABEL: token {token_label!r} holds keys labelled {key_label!r}"
            ) from None
        else:
            raise KekError(
                f"LEDGER_PKCS11_KEY_LABEL: token {token_label!r} already holds a key labelled {key_label!r}; "
                "to rotate, set LEDGER_PKCS11_KEY_LABEL to a new label"
            )
        session.generate_key(
            KeyType.AES, 256, label=key_label, store=True,
            template={
                Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.WRAP: True, Attribute.UNWRAP: True,
                Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.PRIVATE: True,
            },
        )  # fmt: skip
    return Pkcs11Kek(token_label=token_label, key_label=key_label)


def _configured_pkcs11() -> Pkcs11Kek:
    token = settings.LEDGER_PKCS11_TOKEN_LABEL
    if not token:
        raise KekError("LEDGER_PKCS11_TOKEN_LABEL: not set, and LEDGER_VAULT_KEK=pkcs11")
    return Pkcs11Kek(token_label=token, key_label=settings.LEDGER_PKCS11_KEY_LABEL)


# --- The vault's view -----------------------------------------------------------------------------


def current_kek(*, create: bool = True) -> Kek:
    """The KEK that wraps new keys (``LEDGER_VAULT_KEK``). The file backend makes its file at the
    first wrap (``create``) when no live key needs an older one."""
    if settings.LEDGER_VAULT_KEK == "pkcs11":
        return _configured_pkcs11()
    return _current_file_kek(create=create)


def kek_for(kek_id: str) -> Kek:
    """The KEK that wrapped a row, by its id: the current one, an older KEK of the key file, or a
    key of the token."""
    if kek_id.startswith(FILE_PREFIX):
        path: Path = settings.LEDGER_VAULT_KEK_FILE
        for kek in _file_keys(path):
            if kek.id == kek_id:
                return kek
        raise KekError(f"LEDGER_VAULT_KEK_FILE: {path} does not hold KEK {kek_id}, which wrapped keys in the vault")
    if kek_id.startswith(PKCS11_PREFIX):
        token, _, label = kek_id[len(PKCS11_PREFIX) :].partition("/")
        return Pkcs11Kek(token_label=token, key_label=label)
    raise KekError(f"unknown KEK id {kek_id!r} (the vault row predates key wrapping: run `manage.py migrate`)")


def key_wrap(key: bytes) -> tuple[bytes, str]:
    """``key`` wrapped by the current KEK, and that KEK's id."""
    kek = current_kek()
    return kek.wrap(key), kek.id


def key_unwrap(wrapped: bytes, kek_id: str) -> bytes:
    return kek_for(kek_id).unwrap(wrapped)


# --- Rotation -------------------------------------------------------------------------------------


def kek_new() -> Kek:
    """Make a new KEK for the configured backend, which wraps from now on: a new line of the key
    file, or a new key in the token under ``LEDGER_PKCS11_KEY_LABEL`` (which must be a new label)."""
    if settings.LEDGER_VAULT_KEK == "pkcs11":
        configured = _configured_pkcs11()
        return pkcs11_kek_create(configured.token_label, configured.key_label)
    path: Path = settings.LEDGER_VAULT_KEK_FILE
    if not path.exists():
        return _current_file_kek(create=True)  # refuses when live keys need the missing file
    return file_kek_add(path)


def kek_check() -> Kek:
    """The current KEK, after a round trip through it: for ``rotate-kek`` and a deployment's
    smoke test, so a misconfigured KEK is named before any key is touched."""
    target = current_kek()
    probe = os.urandom(KEY_BYTES)
    if target.unwrap(target.wrap(probe)) != probe:
        raise KekError(f"{target.id}: a key wrapped and unwrapped does not come back the same")
    return target


def kek_startup_problem() -> str | None:
    """What is wrong with the vault's KEK, for a process's start-up (None when nothing is): the
    token is opened and a key round-trips through it; a file KEK must be readable and private, or
    absent with no live key needing it (it is then made at the first wrap)."""
    try:
        if settings.LEDGER_VAULT_KEK == "pkcs11" or settings.LEDGER_VAULT_KEK_FILE.exists():
            kek_check()
        else:
            from audits.ledger.models import DataSubjectKey

            if DataSubjectKey.objects.filter(kek_id__startswith=FILE_PREFIX, key__isnull=False).exists():
                return f"LEDGER_VAULT_KEK_FILE: {settings.LEDGER_VAULT_KEK_FILE} does not exist, and keys need it"
    except KekError as exc:
        return str(exc)
    except DatabaseError:
        return None  # not migrated yet: the first wrap says what is wrong, if anything
    return None


def kek_rotate(*, batch_size: int = 500, progress: Any = None) -> tuple[int, str]:
    """Re-wrap every live key not wrapped by the current KEK under it, ``batch_size`` rows a
    transaction; returns (keys re-wrapped, the current KEK's id).

    Resumable: a batch commits whole or not at all, and a new run picks up the rows still under an
    older KEK. Erased rows (no key) are left as they are: nothing brings their key back. No ledger
    entry is read or written, so every hash, proof and checkpoint stays as it was; sealed values
    keep their ciphertext, since the subjects' keys themselves do not change."""
    from django.db import transaction

    from audits.ledger.models import DataSubjectKey

    target = kek_check()
    done = 0
    while True:
        with transaction.atomic():
            batch = list(
                DataSubjectKey.objects.select_for_update()
                .filter(key__isnull=False)
                .exclude(kek_id=target.id)
                .order_by("pk")[:batch_size]
            )
            if not batch:
                return done, target.id
            for row in batch:
                rewrapped = target.wrap(kek_for(row.kek_id).unwrap(bytes(row.key)))
                # Conditional: a row erased meanwhile stays erased.
                done += DataSubjectKey.objects.filter(pk=row.pk, kek_id=row.kek_id, key__isnull=False).update(
                    key=rewrapped, kek_id=target.id
                )
        if progress is not None:
            progress(done)


def kek_ids_in_use() -> dict[str, int]:
    """How many live keys each KEK wraps."""
    from django.db.models import Count

    from audits.ledger.models import DataSubjectKey

    rows = DataSubjectKey.objects.filter(key__isnull=False).values("kek_id").annotate(n=Count("pk"))
    return {row["kek_id"]: row["n"] for row in rows.order_by("kek_id")}
