"""The witness policy in ``ledger verify``: ``check_quorum()``.

With ``LEDGER_WITNESSES`` configured, every stored co-signature must verify under its witness's
configured key, over a note that the log's trusted keys signed, whose root is this ledger's root at
its size (from the stored subtree hashes; verification also replays those notes against the
entries). A co-signed tree that this ledger does not hold is a split view: the operator showed the
witnesses (and whoever trusts them) another history than the one stored here. With
``LEDGER_WITNESS_QUORUM`` k above zero, every checkpoint signed more than
``LEDGER_WITNESS_GRACE_S`` ago must be covered by a checkpoint that carries co-signatures of k
witnesses (the same one or a later one, which extends it). Without witnesses, nothing is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from llmops_ledger_verify.cosignature import CosignerKey, QuorumOutcome
from llmops_ledger_verify.cosignature import check_quorum as check_policy

from audits.ledger.keys import KeyFileError, VerifierKey
from audits.ledger.models import Checkpoint
from audits.ledger.replay import VerificationFailed, check_notes
from audits.ledger.witness.selectors import witnessed_notes

__all__ = ["check_quorum", "configured_witness_keys", "witnessed_notes"]


def configured_witness_keys() -> list[CosignerKey]:
    return [CosignerKey.decode(w["key"]) for w in settings.LEDGER_WITNESSES]


def check_quorum(
    texts: Sequence[tuple[str, str]] | None = None, *, verifiers: Sequence[VerifierKey] | None = None
) -> QuorumOutcome:
    """Enforce the witness policy on the co-signed checkpoints ``texts`` (default: those stored,
    ``witnessed_notes()``); raises ``VerificationFailed`` naming the checkpoint or the policy at
    fault. ``verifiers``: the log's trusted keys (default: ``trusted_verifiers()``)."""
    from audits.ledger.selectors import root_at, tree_size

    witnesses = configured_witness_keys()
    quorum = settings.LEDGER_WITNESS_QUORUM
    if not witnesses:
        return QuorumOutcome(quorum=0, witnesses=0)
    texts = list(witnessed_notes() if texts is None else texts)
    if verifiers is None:
        from audits.ledger.verification import trusted_verifiers

        try:
            verifiers = trusted_verifiers()
        except KeyFileError as exc:
            raise VerificationFailed("trusted keys", str(exc)) from None
    size_now = tree_size()
    for signed in check_notes(texts, verifiers, settings.LEDGER_ORIGIN):
        size, root = signed.checkpoint.size, signed.checkpoint.root
        if size > size_now:
            raise VerificationFailed(
                signed.label, f"split view: witnesses co-signed a tree of size {size}; this ledger holds {size_now}"
            )
        if root_at(size) != root:
            raise VerificationFailed(
                signed.label, f"split view: witnesses co-signed another tree of size {size} than this ledger holds"
            )
    outcome = check_policy(texts, witnesses, quorum, require=False)
    if quorum:
        cutoff = timezone.now() - timedelta(seconds=settings.LEDGER_WITNESS_GRACE_S)
        due = Checkpoint.objects.filter(created_at__lte=cutoff).order_by("-tree_size").first()
        if due is not None and outcome.witnessed_size < due.tree_size:
            size = outcome.witnessed_size
            witnessed = f"witnessed up to size {size}" if size >= 0 else "none witnessed yet"
            raise VerificationFailed(
                "witness quorum",
                f"the checkpoint of size {due.tree_size}, signed at {due.created_at:%Y-%m-%d %H:%M:%S} UTC, is not "
                f"covered by a checkpoint co-signed by {quorum} of the {len(witnesses)} witnesses ({witnessed}; "
                f"LEDGER_WITNESS_GRACE_S={settings.LEDGER_WITNESS_GRACE_S})",
            )
    return outcome
