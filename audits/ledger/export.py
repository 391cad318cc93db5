"""Export a ledger bundle that ``python -m audits.verify`` checks without the service.

Layout of the bundle directory:

- ``entries.jsonl``: one line per entry: ``index``, ``body_b64`` (the exact hashed bytes),
  ``leaf_hash_b64`` (the leaf hash the server stored: it lets the verifier name a changed entry)
  and ``entry`` (the same bytes decoded, for reading; sealed personal data stays sealed);
- ``checkpoints/``: one signed note per file, ``<tree size>-<id>.note``;
- ``keys.txt``: the verifier keys (C2SP signed-note form), one per line;
- ``witnessed/``: each checkpoint its witnesses co-signed, with their co-signature lines (C2SP
  tlog-cosignature), one note per file, ``<tree size>-<n>.note``; and ``witnesses.txt``: the
  witnesses' keys (``LEDGER_WITNESSES``), written only when witnesses are configured;
- ``bundle.json``: origin, tree size and export time.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from audits.ledger.models import Checkpoint
from audits.ledger.selectors import head_tree
from audits.ledger.verification import known_verifiers, stream_entries
from audits.ledger.witness.selectors import witnessed_notes


class ExportError(Exception):
    pass


def ledger_export(directory: Path) -> dict[str, object]:
    """Write the bundle. The service may append and sign meanwhile: the checkpoints are read
    first, then the head, then only the entries below the head's size, so the bundle holds every
    entry its checkpoints cover and verifies offline; what is appended later goes in the next
    export."""
    if directory.exists() and any(directory.iterdir()):
        raise ExportError(f"{directory} is not empty; export into a new or empty directory")
    checkpoints = list(Checkpoint.objects.order_by("tree_size", "id"))
    witnessed = witnessed_notes()  # co-signatures of checkpoints read just above, or of earlier ones
    size = head_tree().size  # the head only grows: it covers every checkpoint just read
    (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
    written = 0
    with (directory / "entries.jsonl").open("w", encoding="utf-8") as out:
        for index, body, leaf in stream_entries(below=size):
            record = {
                "index": index,
                "body_b64": base64.b64encode(body).decode(),
                "leaf_hash_b64": base64.b64encode(leaf or b"").decode(),
                "entry": json.loads(body),
            }
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            written += 1
    for row in checkpoints:
        (directory / "checkpoints" / f"{row.tree_size:012d}-{row.pk}.note").write_text(row.note, encoding="utf-8")
    if witnessed or settings.LEDGER_WITNESSES:
        (directory / "witnessed").mkdir()
        for number, (_, text) in enumerate(witnessed, start=1):
            size_line = text.split("\n", 2)[1]
            (directory / "witnessed" / f"{int(size_line):012d}-{number}.note").write_text(text, encoding="utf-8")
        keys = "".join(w["key"] + "\n" for w in settings.LEDGER_WITNESSES)
        (directory / "witnesses.txt").write_text(keys, encoding="utf-8")
    # Read after the checkpoints: a key is published in the transaction of the first checkpoint it signs.
    (directory / "keys.txt").write_text("".join(k.encode() + "\n" for k in known_verifiers()), encoding="utf-8")
    manifest = {
        "origin": settings.LEDGER_ORIGIN,
        "tree_size": written,
        "checkpoints": len(checkpoints),
        "witnessed_checkpoints": len(witnessed),
        "exported_at": timezone.now().isoformat(),
    }
    (directory / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
