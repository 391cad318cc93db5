"""A project's PII lists applied to a scan's findings (the entries: ``governance.models.PiiListEntry``,
written by ``governance.services.pii_list_entry_add``).

``for_project(project).apply(text, hits)``:

- drops a finding whose value (``text[start:end]``) has an allow entry's keyed hash, or matches an
  allow entry's regular expression whole (``fullmatch``: ``[0-9a-f]{8,16}`` allows a hex id, not
  a sentence holding one), where the entry's type is the finding's or blank (every type);
- adds what the deny entries match, found by Presidio's own ``PatternRecognizer`` (terms through
  its ``deny_list``, whole words in any case; expressions as its ``Pattern``s), reported as each
  entry's type with score 1.0, unless a finding of that type already covers the same span. Deny
  findings are not filtered by the allow entries: a deny entry is as explicit as an allow entry,
  and the one that reports is the safer of the two.

Pure and cheap: one query to build, no writes, nothing kept of the texts. ``describe()`` is what
a scan's engine record keeps of the lists (counts and a digest of the rules, hashes included, never
a value), so a finding can be traced to the lists it was made under.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from governance.models import PiiListEntry, PiiListKind, PiiListMatch, Project
from governance.services.pii_lists import Rule, allow_value_hash, compile_pattern
from registry.pii import Hit

DENY_SCORE = 1.0


@dataclass
class PiiLists:
    """The compiled rules of one project's lists; build with :func:`for_project` or :func:`from_rules`."""

    rules: tuple[Rule, ...]
    secret: str
    # entity ("" for every type) -> keyed hashes / compiled expressions that allow a value
    _allow_hashes: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)
    _allow_patterns: dict[str, list[Any]] = field(default_factory=dict, init=False, repr=False)
    _deny: list[Any] = field(default_factory=list, init=False, repr=False)  # PatternRecognizers, one per type

    def __post_init__(self) -> None:
        deny_terms: dict[str, list[str]] = {}
        deny_patterns: dict[str, list[str]] = {}
        for rule in self.rules:
            if rule.kind == PiiListKind.ALLOW and rule.match == PiiListMatch.VALUE:
                self._allow_hashes.setdefault(rule.entity, set()).add(rule.value_hash)
            elif rule.kind == PiiListKind.ALLOW:
                self._allow_patterns.setdefault(rule.entity, []).append(compile_pattern(rule.pattern))
            elif rule.match == PiiListMatch.TERM:
                deny_terms.setdefault(rule.entity, []).append(rule.pattern)
            else:
                deny_patterns.setdefault(rule.entity, []).append(rule.pattern)
        if deny_terms or deny_patterns:
            from presidio_analyzer import Pattern, PatternRecognizer

            for entity in sorted(set(deny_terms) | set(deny_patterns)):
                patterns = [
                    Pattern(name=f"{entity.lower()}_deny_{i}", regex=p, score=DENY_SCORE)
                    for i, p in enumerate(deny_patterns.get(entity, []))
                ]
                self._deny.append(
                    PatternRecognizer(
                        supported_entity=entity,
                        name=f"project_deny_{entity.lower()}",
                        patterns=patterns,
                        deny_list=deny_terms.get(entity) or None,
                        deny_list_score=DENY_SCORE,
                    )
                )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def allowed(self, entity: str, value: str) -> bool:
        """Whether an allow entry covers ``value`` found as ``entity``."""
        if self._allow_hashes:
            hashes = self._allow_hashes.get("", set()) | self._allow_hashes.get(entity, set())
            if hashes and allow_value_hash(value, self.secret) in hashes:
                return True
        for key in ("", entity):
            for compiled in self._allow_patterns.get(key, ()):
                if compiled.fullmatch(value) is not None:
                    return True
        return False

    def apply(self, text: str, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` found in ``text`` less the allowed ones, plus the deny entries' findings; in
        the scanner's order (start, end, entity, score)."""
        if not self.rules:
            return list(hits)
        kept = [h for h in hits if not self.allowed(h.entity, text[h.start : h.end])]
        covered = {(h.entity, h.start, h.end) for h in kept}
        for recognizer in self._deny:
            for result in recognizer.analyze(text=text, entities=recognizer.supported_entities):
                if result.end > result.start and (result.entity_type, result.start, result.end) not in covered:
                    covered.add((result.entity_type, result.start, result.end))
                    kept.append(Hit(result.entity_type, result.start, result.end, round(result.score, 4)))
        return sorted(kept, key=lambda h: (h.start, h.end, h.entity, h.score))

    def describe(self) -> dict[str, Any]:
        """Counts per kind of rule and a SHA-256 of the rules (hashes and expressions, never values)."""
        counts = {"allow_values": 0, "allow_patterns": 0, "deny_terms": 0, "deny_patterns": 0}
        for rule in self.rules:
            noun = {"value": "values", "pattern": "patterns", "term": "terms"}[rule.match]
            counts[f"{rule.kind}_{noun}"] += 1
        canonical = json.dumps(
            sorted([r.kind, r.match, r.entity, r.pattern, r.value_hash] for r in self.rules), separators=(",", ":")
        )
        return {**counts, "digest": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()}


def from_rules(rules: Iterable[Rule], secret: str | None = None) -> PiiLists:
    """Lists from rules already validated (``governance.services.pii_rule_validate``); the
    benchmark builds its lists this way, without a database."""
    if secret is None:
        from django.conf import settings

        secret = settings.DATA_SUBJECT_INDEX_KEY
    return PiiLists(rules=tuple(rules), secret=secret)


def project_rules(project: Project) -> list[Rule]:
    """The rules of ``project``'s lists (its entries not removed), in one query."""
    rows = PiiListEntry.objects.filter(project=project, removed_at__isnull=True).order_by("pk")
    return [
        Rule(kind, match, entity, pattern, value_hash)
        for kind, match, entity, pattern, value_hash in rows.values_list(
            "kind", "match", "entity", "pattern", "value_hash"
        )
    ]


def for_project(project: Project) -> PiiLists:
    """``project``'s lists as they are now, compiled once for a whole scan."""
    return from_rules(project_rules(project))
