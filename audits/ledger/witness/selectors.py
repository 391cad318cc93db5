"""Reads of witnessing: this log's checkpoints with the co-signature lines its witnesses gave."""

from __future__ import annotations

from typing import Any

from audits.ledger.models_witness import WitnessCosignature


def cosigned_note(checkpoint: Any) -> str:
    """The checkpoint's signed note with every co-signature line stored for it appended (a signed
    note carries any number of signature lines; a reader ignores those of keys it does not know)."""
    lines = WitnessCosignature.objects.filter(checkpoint_id=checkpoint.pk).order_by("id").values_list("line", flat=True)
    return checkpoint.note + "".join(lines)


def witnessed_notes() -> list[tuple[str, str]]:
    """Every co-signed checkpoint as ``(label, note with its co-signature lines)``, by tree size.
    Built from the co-signature rows alone (each keeps the note it co-signed), not the checkpoints."""
    grouped: dict[str, list[str]] = {}
    for note, line in WitnessCosignature.objects.order_by("tree_size", "id").values_list("note", "line"):
        grouped.setdefault(note, []).append(line)
    return [(f"co-signed checkpoint {n}", note + "".join(lines)) for n, (note, lines) in enumerate(grouped.items(), 1)]
