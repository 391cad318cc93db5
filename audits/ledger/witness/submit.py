"""This log's side of C2SP tlog-witness: ask the configured witnesses to co-sign its latest checkpoint.

``witness_latest()`` (the Celery task ``ledger.witness``, dispatched after a checkpoint is signed,
see ``audits.ledger.tasks``) sends the latest checkpoint to every witness in ``LEDGER_WITNESSES``
that has not co-signed it: ``POST <prefix>/add-checkpoint`` with ``old <size>`` (the size that
witness co-signed last for this log, 0 if none), the RFC 6962 consistency proof from that size,
an empty line and the signed note. A 200 answer's co-signature is verified under the witness's
configured key and stored (``WitnessCosignature``); a 409 with another size is the witness's own
record, and the request is made once more from it; a 409 at the same size means the witness
co-signed a different tree of that size (a split view) and is logged as an error, as is any other
refusal. A witness that cannot be reached (or answers 5xx) raises ``WitnessUnavailable`` for the
task to retry. Nothing here runs inside a governed write.
"""

from __future__ import annotations

import base64
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Max
from django.utils import timezone
from llmops_ledger_verify.cosignature import CosignerKey, note_body

from audits.ledger import notes
from audits.ledger.models import Checkpoint
from audits.ledger.models_witness import WitnessCosignature

logger = logging.getLogger("audits.ledger.witness")

Transport = Callable[[str, bytes, float], tuple[int, str, str]]


class WitnessUnavailable(Exception):
    """A witness could not be reached, or failed on its side: try again later."""


class WitnessRefused(Exception):
    """A witness refused the checkpoint, or answered something that is not a valid co-signature."""


@dataclass(frozen=True)
class Witness:
    key: CosignerKey
    url: str

    @property
    def name(self) -> str:
        return self.key.name


def configured_witnesses() -> list[Witness]:
    return [Witness(key=CosignerKey.decode(w["key"]), url=w["url"]) for w in settings.LEDGER_WITNESSES]


def http_post(url: str, body: bytes, timeout: float) -> tuple[int, str, str]:
    """POST ``body``; returns (status, content type, text). No proxy: a witness is called directly."""
    if not url.startswith(("http://", "https://")):  # settings allow no other scheme; checked again here
        raise WitnessRefused(f"{url}: not an http(s) URL")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read(65536).decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read(65536).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        raise WitnessUnavailable(f"{url}: {getattr(exc, 'reason', exc)}") from None


def request_body(old_size: int, proof: list[bytes], note: str) -> bytes:
    return (f"old {old_size}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note).encode()


def _last_cosigned_size(witness: Witness) -> int:
    return WitnessCosignature.objects.filter(witness=witness.key.encode()).aggregate(m=Max("tree_size"))["m"] or 0


def _cosignature(witness: Witness, checkpoint: Checkpoint, answer: str) -> tuple[str, int]:
    try:
        lines = notes.parse_signature_lines(answer)
    except notes.NoteError as exc:
        raise WitnessRefused(f"witness {witness.name} answered no signature lines: {exc}") from None
    body = note_body(checkpoint.note)
    for signature, text in zip(lines, answer[:-1].split("\n"), strict=True):
        if witness.key.matches(signature):
            try:
                return text + "\n", witness.key.verify(signature, body)
            except notes.NoteError as exc:
                raise WitnessRefused(f"witness {witness.name}: {exc}") from None
    raise WitnessRefused(f"witness {witness.name} answered no co-signature by its configured key")


def witness_submit(
    *, witness: Witness, checkpoint: Checkpoint, transport: Transport | None = None
) -> WitnessCosignature | None:
    """Have ``witness`` co-sign ``checkpoint``; the stored co-signature, or ``None`` when the
    witness has already co-signed a larger tree of this log (an older checkpoint needs no more)."""
    from audits.ledger.selectors import consistency_proof

    post = transport or http_post
    existing = WitnessCosignature.objects.filter(checkpoint=checkpoint, witness=witness.key.encode()).first()
    if existing is not None:
        return existing
    old = _last_cosigned_size(witness)
    for _ in range(2):
        if old > checkpoint.tree_size:
            return None
        proof = consistency_proof(old, checkpoint.tree_size) if 0 < old < checkpoint.tree_size else []
        url, body = f"{witness.url}/add-checkpoint", request_body(old, proof, checkpoint.note)
        status, _, text = post(url, body, settings.LEDGER_WITNESS_TIMEOUT_S)
        if status == 200:
            line, timestamp = _cosignature(witness, checkpoint, text)
            row, _ = WitnessCosignature.objects.get_or_create(
                checkpoint=checkpoint, witness=witness.key.encode(),
                defaults={"tree_size": checkpoint.tree_size, "note": checkpoint.note, "line": line,
                          "timestamp": timestamp, "received_at": timezone.now()},
            )  # fmt: skip
            return row
        if status == 409:
            try:
                known = int(text.strip())
            except ValueError:
                raise WitnessRefused(f"witness {witness.name} answered 409 without its size: {text[:200]!r}") from None
            if known == old:
                raise WitnessRefused(
                    f"witness {witness.name} co-signed a different tree of size {known} for this log: a split view"
                )
            old = known
            continue
        if status >= 500:
            raise WitnessUnavailable(f"witness {witness.name} answered {status}: {text[:200]}")
        raise WitnessRefused(f"witness {witness.name} refused the checkpoint of size {checkpoint.tree_size}: "
                             f"{status} {text.strip()[:300]}")  # fmt: skip
    raise WitnessRefused(f"witness {witness.name} answered 409 twice")


def witness_latest(*, transport: Transport | None = None) -> dict[str, str]:
    """Send the latest checkpoint to every configured witness that has not co-signed it; returns
    the outcome per witness. Raises ``WitnessUnavailable`` (after trying them all) if one could
    not be reached, so the caller retries; a refusal is logged and not retried."""
    witnesses = configured_witnesses()
    latest = Checkpoint.objects.order_by("-tree_size", "-id").first()
    if not witnesses or latest is None or latest.tree_size == 0:
        return {}
    outcome: dict[str, str] = {}
    unavailable = []
    for witness in witnesses:
        try:
            row = witness_submit(witness=witness, checkpoint=latest, transport=transport)
        except WitnessUnavailable as exc:
            logger.warning("witness %s unavailable: %s", witness.name, exc)
            outcome[witness.name] = f"unavailable: {exc}"
            unavailable.append(str(exc))
        except WitnessRefused as exc:
            logger.error("witness %s: %s", witness.name, exc)
            outcome[witness.name] = f"refused: {exc}"
        else:
            outcome[witness.name] = "co-signed" if row is not None else "ahead"
    if unavailable:
        raise WitnessUnavailable("; ".join(unavailable))
    return outcome


def witnessing_pending() -> bool:
    """Whether a configured witness has not co-signed the latest checkpoint yet."""
    latest = Checkpoint.objects.order_by("-tree_size", "-id").first()
    if not settings.LEDGER_WITNESSES or latest is None or latest.tree_size == 0:
        return False
    done = set(WitnessCosignature.objects.filter(checkpoint=latest).values_list("witness", flat=True))
    return any(w["key"] not in done for w in settings.LEDGER_WITNESSES)
