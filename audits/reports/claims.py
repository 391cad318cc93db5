"""The facts a report states, each with the ledger entry that says it, and their check.

A builder states a fact with ``Claims.add``: what it is ("dataset shop/tickets: lawful basis"),
the entry, a dotted path into the entry's JSON document and the value the report prints. The
claims travel in the signed ``report.json``; ``report verify`` reads every cited entry back from
the ledger (after proving it is in the signed checkpoint) and ``first_false_claim`` names the
first claim the entry does not bear out. A report that was edited and signed again with the
service's key still fails there: the ledger, not the report, says what is true.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from audits.reports.pdf import Claim

MISSING = object()


def _at(document: Any, path: str) -> Any:
    value = document
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def _same(stated: Any, found: Any) -> bool:
    """JSON equality: what the report states, as it travelled through JSON, against the entry."""
    return json.dumps(stated, sort_keys=True) == json.dumps(found, sort_keys=True)


def first_false_claim(claims: Iterable[Claim], bodies: Mapping[int, bytes]) -> str | None:
    """The first claim that the entry it cites does not bear out, in words; ``None`` when all do.
    ``bodies`` holds the cited entries' bytes by index (each already proven in the checkpoint)."""
    documents: dict[int, Any] = {}
    for claim in claims:
        body = bodies.get(claim.entry)
        if body is None:
            return f"claim {claim.fact!r}: entry {claim.entry} is not among the report's cited entries"
        if claim.entry not in documents:
            documents[claim.entry] = json.loads(body)
        found = _at(documents[claim.entry], claim.field)
        if found is MISSING:
            return f"claim {claim.fact!r}: entry {claim.entry} has no {claim.field}"
        if not _same(claim.value, found):
            return (
                f"claim {claim.fact!r}: the report says {claim.field} = {json.dumps(claim.value, ensure_ascii=False)}, "
                f"entry {claim.entry} says {json.dumps(found, ensure_ascii=False)}"
            )
    return None


class Claims:
    """A builder's claims, in the order stated; ``add`` returns the entry index, for a table's
    citation column."""

    def __init__(self) -> None:
        self.items: list[Claim] = []
        # Facts the report needs and the data lacks, in words: they make the report a draft.
        self.missing: list[str] = []

    def add(self, fact: str, entry: int | None, field: str, value: Any) -> int | None:
        if entry is not None:
            self.items.append(Claim(fact=fact, entry=entry, field=field, value=value))
        return entry

    def many(self, fact: str, entry: int | None, fields: Mapping[str, Any]) -> int | None:
        for field, value in fields.items():
            self.add(f"{fact}: {field.rsplit('.', 1)[-1]}", entry, field, value)
        return entry
