"""A requester's identifiers: the kinds accepted, their normal form, their keyed hashes, and how a
record is matched against them. Rules only: no database, no clock.

A request names the person by ``{kind, value}`` pairs (email, phone or name, also under Presidio's
entity names). The subject index holds keyed hashes of normalised identifiers, so a request finds
the dataset versions the PII scan indexed the person in; the finder then singles out the records
that hold the identifiers the way that scan read them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.conf import settings

from common.errors import DomainError
from registry import pii

__all__ = ["ENTITY_OF_KIND", "IDENTIFIER_KINDS", "finder", "identifier_hashes", "normalise_identifiers"]

# The index's identifier kinds, accepted also under Presidio's entity names (EMAIL_ADDRESS, ...).
IDENTIFIER_KINDS = {**{kind: kind for kind in pii.SUBJECT_KINDS.values()}, **pii.SUBJECT_KINDS}
ENTITY_OF_KIND = {kind: entity for entity, kind in pii.SUBJECT_KINDS.items()}

# Characters an e-mail address's local part may hold besides word characters (RFC 5322 atext).
_LOCAL_PART_SYMBOLS = set("!#$%&'*+-/=?^_`{|}~.")


def _invalid(message: str) -> DomainError:
    return DomainError("invalid_input", f"identifiers: {message}", fields={"identifiers": [message]})


def normalise_identifiers(identifiers: Any) -> list[dict[str, str]]:
    """``[{kind, value}]`` with each kind under the index's name and each value stripped, one per
    normalised identifier; a ``DomainError`` naming the ``identifiers`` field for bad input."""
    if not isinstance(identifiers, list) or not identifiers:
        raise _invalid("give at least one identifier as {kind, value}")
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for item in identifiers:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str) or not item["value"].strip():
            raise _invalid("each identifier is {kind, value} with a non-empty value")
        kind = IDENTIFIER_KINDS.get(str(item.get("kind", "")))
        if kind is None:
            known = ", ".join(sorted(IDENTIFIER_KINDS))
            raise _invalid(f"unknown identifier kind {item.get('kind')!r}; one of {known}")
        normalised = pii.normalise_identifier(kind, item["value"])
        if not normalised.strip("+"):
            raise _invalid(f"the {kind} identifier is empty once normalised")
        seen.setdefault((kind, normalised), {"kind": kind, "value": item["value"].strip()})
    return list(seen.values())


def identifier_hashes(identifiers: list[dict[str, str]]) -> list[dict[str, str]]:
    """The subject index's keyed hashes of normalised ``identifiers``, sorted: ``[{kind, key_hash}]``."""
    return sorted(
        (
            {"kind": i["kind"], "key_hash": pii.subject_key(i["kind"], i["value"], settings.DATA_SUBJECT_INDEX_KEY)}
            for i in identifiers
        ),
        key=lambda h: (h["kind"], h["key_hash"]),
    )


def _email_at(text: str, start: int) -> bool:
    """Whether the address found at ``start`` begins there, as the scan's recogniser reads it:
    it starts an address at a word boundary and runs left over the local part's characters, so
    ``hana.silva@…`` and ``x.ana.silva@…`` are other addresses, while ``--ana.silva@…`` is Ana's
    (the dashes before it hold no word character)."""
    i = start
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_" or text[i - 1] in _LOCAL_PART_SYMBOLS):
        i -= 1
        if text[i].isalnum() or text[i] == "_":
            return False
    return True


def finder(identifiers: list[dict[str, str]]) -> Callable[[str], list[tuple[int, int]]]:
    """Where a text holds one of the identifiers, as a whole token, the way the scan that indexed
    it reads them (ana@x.org is not in hana@x.org nor in ana@x.org.uk; a name matches on word
    boundaries; a phone number by its digits): the ``(start, end)`` spans, in order, overlapping
    ones merged. No span: the text does not hold the person (a record is not theirs); the spans
    are what an erasure blanks in free text."""
    patterns: list[re.Pattern[str]] = []
    emails: list[re.Pattern[str]] = []
    phones: set[str] = set()
    for identifier in identifiers:
        kind, value = identifier["kind"], identifier["value"].strip()
        if kind == "email":
            emails.append(re.compile(rf"{re.escape(value)}(?!\w|[-.]\w)", re.IGNORECASE))
        elif kind == "name":
            words = r"\s+".join(re.escape(word) for word in value.split())
            patterns.append(re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE))
        else:
            phones.add(pii.normalise_identifier("phone", value).lstrip("+"))
    phone_like = re.compile(r"\+?\d[\d\s().-]{4,}\d")

    def find(text: str) -> list[tuple[int, int]]:
        spans = [m.span() for p in patterns for m in p.finditer(text)]
        spans += [m.span() for p in emails for m in p.finditer(text) if _email_at(text, m.start())]
        if phones:
            spans += [
                m.span()
                for m in phone_like.finditer(text)
                if pii.normalise_identifier("phone", m.group()).lstrip("+") in phones
            ]
        merged: list[tuple[int, int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    return find
