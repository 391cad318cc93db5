"""Presidio's findings, fast: the PII engine of dataset scans and of the model server's guard.

No Django, and nothing heavy at import: spaCy and Presidio are imported when an ``Engine`` is
built, which only workers and the model server do.

An ``Engine`` holds Presidio's ``AnalyzerEngine`` over its predefined recognizers, kept to the
configured entity types, and the spaCy pipeline (an installed package, a folder, or ``blank``:
pattern recognizers only). ``analyze`` is one plain ``AnalyzerEngine.analyze`` call: the
reference. ``scan``, ``scan_batch`` and ``scan_iter`` give the same findings, faster, by changing
only how spaCy is run and which types Presidio is asked about:

1. **Only the types a text can hold.** A pattern recognizer can match only where one of its own
   regular expressions matches (compiled with its flags, by the same ``regex`` engine); a phone
   number needs at least as many digits as the shortest number python-phonenumbers knows. Presidio
   removes duplicates per type, so leaving out types a text cannot hold changes nothing else.
2. **Only the spaCy components whose output is read.** Presidio reads three things from spaCy:
   the tokens, the entities (the NER recognizer) and the lemmas (the context enhancer, for
   results of recognizers that have context words). In pipelines like ``en_core_web_sm`` the
   ``ner`` component is last and has its own embedding layer (it listens to no other component),
   and its features are lexical (NORM, PREFIX, SUFFIX, SHAPE), which no earlier component sets:
   run alone it finds exactly the entities it finds at the end of the full pipeline. So every
   text goes through the tokenizer and ``ner`` only, in batches (``Pipe.pipe``). The components
   before ``ner`` (embedding, tagger, parser, attribute ruler, lemmatizer) run, in batches, only
   on the texts whose lemmas can change a result: those where a recognizer with context words may
   report something (step 1) and some token could have a lemma holding one of its context words.
   A token's possible lemmas are computed from the lemmatizer's own tables: the token's text,
   lower-cased, every exception and every suffix rule of every part of speech, and every lemma
   the attribute ruler can set. Elsewhere no context word can be found near any result, whatever
   the lemmas, so Presidio sees empty lemmas and enhances nothing, as it would have. A pipeline
   where ``ner`` listens to another component, or is not last, or that has components this
   reasoning does not know, runs whole on every text (still batched).
3. **Each distinct text once.** Within a batch, and across batches through a bounded cache of
   recent texts (a system prompt repeated in every record of a chat dataset is analysed once).
4. **Processes that load the model once.** ``scan_iter(processes=N)`` forks N children that
   inherit the loaded engine, and feeds them batches with a bounded number in flight: memory does
   not grow with the number of texts, and findings come back in input order. Each batch runs in a
   spaCy memory zone, so the strings it meets are not kept either.

``bench.pii`` checks every finding of every record against plain ``analyze`` and against
Presidio's ``BatchAnalyzerEngine``.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain, islice
from typing import Any

logger = logging.getLogger(__name__)

# Nothing here may reach a hub or fetch tldextract's suffix list (Presidio's e-mail recognizer
# validates domains with tldextract, which reads this variable when it is imported).
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
}


def set_offline_environment() -> None:
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


# Token attributes that only the tokenizer sets, unless an attribute ruler says otherwise.
_LEXICAL = {"ORTH", "LOWER", "NORM", "PREFIX", "SUFFIX", "SHAPE"}


class EngineError(ValueError):
    """The engine cannot be built as configured (pipeline or entity types)."""


@dataclass(frozen=True)
class Hit:
    entity: str
    start: int
    end: int
    score: float


def load_pipeline(name: str) -> Any:
    """A spaCy pipeline: ``blank`` (tokenizer only), an installed package or a folder."""
    import spacy

    if name == "blank":
        return spacy.blank("en")
    try:
        return spacy.load(name)
    except OSError:
        raise EngineError(f"spaCy pipeline {name!r} is neither an installed package nor a folder") from None


def phone_length_bounds(regions: Iterable[str], leniency: int) -> tuple[dict[str, int], int]:
    """Lower bounds on the digits of a phone number python-phonenumbers matches: per region of
    ``regions``, its shortest national number, and for a number written with its country code
    (any region), the shortest country code plus national number. At leniency 0 (POSSIBLE)
    lengths that are possible only for local dialling count too; from 1 (VALID) on, a match must
    be a valid number, whose length is one of the region's possible lengths."""
    from phonenumbers import PhoneMetadata, country_code_for_region
    from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

    def shortest(metadata: Any) -> int | None:
        if metadata is None:
            return None
        desc = metadata.general_desc
        local = desc.possible_length_local_only if leniency == 0 else ()
        lengths = [n for n in (*desc.possible_length, *local) if n > 0]
        return min(lengths) if lengths else None

    international = []
    for code, codes in COUNTRY_CODE_TO_REGION_CODE.items():
        for region in codes:
            meta = (
                PhoneMetadata.metadata_for_nongeo_region(code)
                if region == "001"
                else PhoneMetadata.metadata_for_region(region)
            )
            if (n := shortest(meta)) is not None:
                international.append(len(str(code)) + n)
    fewest_international = max(1, min(international))
    national = {}
    for region in regions:
        # A number parsed for a region is valid if it is valid for any region of its country
        # code (US and CA share +1); a region without metadata matches only numbers written with a
        # country code.
        code = country_code_for_region(region)
        bounds = [
            n
            for r in COUNTRY_CODE_TO_REGION_CODE.get(code, ())
            if (n := shortest(PhoneMetadata.metadata_for_region(r)))
        ]
        national[region] = max(1, min(bounds)) if bounds else fewest_international
    return national, fewest_international


@cache
def _presidio_extensions() -> tuple[type, type, type]:
    """Subclasses of Presidio's classes with the same findings (module docstring, 2 and 5)."""
    from phonenumbers import phonenumbermatcher as matcher
    from presidio_analyzer import EntityRecognizer
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
    from presidio_analyzer.nlp_engine import NlpArtifacts
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    # A superset of the digit part of every candidate python-phonenumbers' matcher considers
    # (its _PATTERN without the bounds on repetition); built from the matcher's own pieces.
    runs = re.compile(
        matcher._DIGIT_SEQUENCE + "(?:" + matcher._PUNCTUATION + matcher._DIGIT_SEQUENCE + ")*", matcher._REGEX_FLAGS
    )
    digit = re.compile(r"\d")
    plus = re.compile("[" + matcher._PLUS_CHARS + "]")
    # The lead of a candidate (opening brackets, plus signs, punctuation) before its first digit.
    lead = 2 * (1 + 4) + 4

    class GatedPhoneRecognizer(PhoneRecognizer):
        """Presidio's phone recognizer, run only for the regions whose matcher can find a
        number in the text: a number valid for a region has at least as many digits as its
        shortest national number, or, written with a country code, as the shortest country code
        and national number of any region, after a plus sign (or, without one, after at least
        one digit of an international call prefix); and every digit of a match lies in one run of
        digits and phone punctuation (a plus sign, not punctuation, can only lead a run). The
        other regions' matchers would find nothing."""

        def __init__(self, original: Any) -> None:
            super().__init__(
                context=original.context, supported_language=original.supported_language,
                supported_regions=original.supported_regions, leniency=original.leniency, name=original.name,
            )  # fmt: skip
            national, international = phone_length_bounds(self.supported_regions, self.leniency or 0)
            self._bounds = {
                region: (min(national[region], international + 1), min(national[region], international))
                for region in self.supported_regions
            }

        def regions_for(self, text: str) -> tuple[str, ...]:
            """The regions whose matcher may find a number in ``text``."""
            longest = [0, 0]  # digits of the longest run without and with a plus sign before it
            for run in runs.finditer(text):
                signed = plus.search(text, max(0, run.start() - lead), run.start()) is not None
                longest[signed] = max(longest[signed], len(digit.findall(run.group())))
            return tuple(
                region for region in self.supported_regions
                if longest[0] >= self._bounds[region][0] or longest[1] >= self._bounds[region][1]
            )  # fmt: skip

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            regions = self.regions_for(text)
            if not regions:
                return []
            if len(regions) == len(self.supported_regions):
                return super().analyze(text, entities, nlp_artifacts)
            narrowed = copy.copy(self)
            narrowed.supported_regions = regions
            return PhoneRecognizer.analyze(narrowed, text, entities, nlp_artifacts)

    class MaxScoreAwareEnhancer(LemmaContextAwareEnhancer):
        """Presidio's context enhancer, which leaves a result already at the highest score
        alone: context can only raise a score, and it cannot go above the highest. Such a result
        (a valid e-mail address) so never asks for lemmas."""

        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):  # type: ignore[no-untyped-def]
            top = [r.score >= EntityRecognizer.MAX_SCORE for r in raw_results]
            if not any(top):
                return super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)
            rest = iter(
                super().enhance_using_context(
                    text, [r for r, t in zip(raw_results, top, strict=True) if not t], nlp_artifacts, recognizers,
                    context,
                )
            )  # fmt: skip
            return [copy.deepcopy(r) if t else next(rest) for r, t in zip(raw_results, top, strict=True)]

    class LazyLemmaArtifacts(NlpArtifacts):
        """Artifacts whose lemmas are asked for only when Presidio reads them: then, where no
        context word can be found (``Engine._needs_lemmas``), there are none (the enhancer finds
        nothing, as it would not have); elsewhere the text goes back for the full pipeline."""

        def __init__(self, *, doc: Any, entities: Any, scores: Any, nlp_engine: Any, needs: Any) -> None:
            from spacy.attrs import IDX

            # NlpArtifacts.__init__ would compute the keywords from the lemmas at once.
            self.entities, self.tokens, self.scores = entities, doc, scores
            self.tokens_indices = doc.to_array([IDX]).ravel().tolist()
            self.nlp_engine, self.language = nlp_engine, "en"
            self._needs = needs

        @property
        def lemmas(self) -> list[str]:
            if self._needs():
                raise LemmasNeeded
            return []

        @property
        def keywords(self) -> list[str]:
            return self.lemmas

    return GatedPhoneRecognizer, MaxScoreAwareEnhancer, LazyLemmaArtifacts


class LemmasNeeded(Exception):
    """Raised from inside Presidio's analysis when a text's lemmas may change its findings."""


class Engine:
    """Presidio over the configured entity types, with the fast paths described above."""

    CACHE_TEXTS = 4096

    def __init__(self, *, entities: Sequence[str], threshold: float, nlp_model: str) -> None:
        set_offline_environment()
        import regex
        from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import PhoneRecognizer, SpacyRecognizer

        self.entities = sorted(set(entities))
        self.threshold = threshold
        self.nlp_model = nlp_model
        self.nlp = load_pipeline(nlp_model)
        self.nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": nlp_model}])
        # Set directly: SpacyNlpEngine.load() would try to download a name it cannot find, and
        # cannot load a blank pipeline at all.
        self.nlp_engine.nlp = {"en": self.nlp}
        gated_phone, max_score_enhancer, self._lazy_artifacts = _presidio_extensions()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(nlp_engine=self.nlp_engine, languages=["en"])
        wanted = set(self.entities)
        ner_types = self._ner_types()
        kept, fast, self.covered = [], [], set()
        self._filters: dict[str, list[Any]] = {}
        self._always: set[str] = set()
        for recognizer in registry.recognizers:
            types = wanted & set(recognizer.supported_entities)
            if isinstance(recognizer, SpacyRecognizer):
                # It reports only spaCy entities, renamed by the engine's mapping: the types the
                # pipeline's NER labels can become are all it can ever find.
                types &= ner_types
            if not types:
                continue
            kept.append(recognizer)
            self.covered |= types
            if type(recognizer) is PhoneRecognizer:
                recognizer = gated_phone(recognizer)
                tests = [recognizer.regions_for]
            elif isinstance(recognizer, PatternRecognizer) and recognizer.patterns:
                flags = recognizer.global_regex_flags
                tests = [regex.compile(p.regex, flags=flags).search for p in recognizer.patterns]
            else:
                tests = []
                self._always |= types
            fast.append(recognizer)
            for entity in types:
                self._filters.setdefault(entity, []).extend(tests)
        self._filters = {e: t for e, t in self._filters.items() if e not in self._always}
        registry.recognizers = kept
        self.registry = registry
        self.recognizer_names = sorted(r.name for r in kept)
        # Presidio as it comes (the reference, ``analyze``), and the same recognizers with the
        # gated phone recognizer and the enhancer that leaves top scores alone (the fast path).
        self.reference = AnalyzerEngine(nlp_engine=self.nlp_engine, registry=registry, supported_languages=["en"])
        fast_registry = RecognizerRegistry(supported_languages=["en"])
        fast_registry.recognizers = fast
        self.analyzer = AnalyzerEngine(
            nlp_engine=self.nlp_engine, registry=fast_registry, supported_languages=["en"],
            context_aware_enhancer=max_score_enhancer(),
        )  # fmt: skip
        # Context words per entity type (a recognizer's words count for each type it reports).
        self._context: dict[str, set[str]] = {}
        for recognizer in kept:
            for entity in wanted & set(recognizer.supported_entities):
                if recognizer.context:
                    self._context.setdefault(entity, set()).update(w.lower() for w in recognizer.context)
        self._plan_pipeline(ner_wanted=bool(wanted & ner_types))
        self._cache: OrderedDict[str, list[Hit]] = OrderedDict()
        self._token_context: dict[int, frozenset[str]] = {}

    # --- construction ---------------------------------------------------------------------

    def _ner_types(self) -> set[str]:
        if "ner" not in self.nlp.pipe_names:
            return set()
        config = self.nlp_engine.ner_model_configuration
        labels = set(self.nlp.get_pipe("ner").labels) - set(config.labels_to_ignore)
        mapping = config.model_to_presidio_entity_mapping or {}
        return {mapping.get(label, label) for label in labels}

    def _plan_pipeline(self, *, ner_wanted: bool) -> None:
        """Split the pipeline into what every text needs (``_first``) and what only the texts
        whose lemmas matter do (``_rest``); or leave it whole where the split's reasoning (module
        docstring, 3) does not hold."""
        from spacy.pipeline import (
            AttributeRuler,
            DependencyParser,
            EntityRecognizer,
            Lemmatizer,
            Morphologizer,
            SentenceRecognizer,
            Tagger,
            Tok2Vec,
        )

        pipeline = list(self.nlp.pipeline)
        self._first: list[Any] = [proc for _, proc in pipeline]
        self._rest: list[Any] = []
        self._lemma_sources: set[str] | None = None  # None: lemmas cannot be bounded
        self._lemmatizers: list[Any] = []
        if not pipeline or not isinstance(pipeline[-1][1], EntityRecognizer):
            return
        ner, before = pipeline[-1][1], [proc for _, proc in pipeline[:-1]]
        nodes = list(ner.model.walk())
        if any("listener" in node.name for node in nodes):
            return  # it reads another component's output
        if any(set(node.attrs.get("columns", ())) - _LEXICAL for node in nodes if node.name.startswith("extract")):
            return  # it reads features that an earlier component may set
        known = (Tok2Vec, Tagger, DependencyParser, SentenceRecognizer, Morphologizer, AttributeRuler, Lemmatizer)
        lemma_values: set[str] = set()
        lemmatizers: list[Any] = []
        for proc in before:
            if not isinstance(proc, known):
                return
            if isinstance(proc, AttributeRuler):
                attrs = [p["attrs"] for p in proc.patterns]
                if any(set(a) & _LEXICAL for a in attrs):
                    return
                lemma_values |= {a["LEMMA"].lower() for a in attrs if "LEMMA" in a}
            if isinstance(proc, Lemmatizer):
                overridden = type(proc).rule_lemmatize is not Lemmatizer.rule_lemmatize or (
                    type(proc).lookup_lemmatize is not Lemmatizer.lookup_lemmatize
                )
                if proc.mode not in ("rule", "lookup") or overridden:
                    return
                lemmatizers.append(proc)
        self._lemmatizers = lemmatizers
        self._first = [ner] if ner_wanted else []
        self._rest = before
        self._lemma_sources = lemma_values

    # --- lemmas: which texts need them ------------------------------------------------------

    def _possible_lemmas(self, text: str) -> set[str]:
        """Every lemma the pipeline's lemmatizers could give a token with this text, lower-cased."""
        lower = text.lower()
        forms = {lower}
        for lemmatizer in self._lemmatizers:
            tables = lemmatizer.lookups
            if lemmatizer.mode == "lookup":
                found = tables.get_table("lemma_lookup", {}).get(text, text)
                forms.update(f.lower() for f in ([found] if isinstance(found, str) else found))
                continue
            for exceptions in tables.get_table("lemma_exc", {}).values():
                forms.update(f.lower() for f in exceptions.get(lower, []))
            for rules in tables.get_table("lemma_rules", {}).values():
                for old, new in rules:
                    if lower.endswith(old):
                        forms.add(lower[: len(lower) - len(old)] + new)
        return forms

    def _context_types_of_token(self, orth: int) -> frozenset[str]:
        """The entity types whose context words some possible lemma of this token holds."""
        found = self._token_context.get(orth)
        if found is None:
            forms = self._possible_lemmas(self.nlp.vocab.strings[orth])
            found = frozenset(e for e, words in self._context.items() if any(w in f for w in words for f in forms))
            if len(self._token_context) > 200_000:
                self._token_context.clear()
            self._token_context[orth] = found
        return found

    def _needs_lemmas(self, doc: Any, entities: Sequence[str]) -> bool:
        """Whether a context word could be found in this text for a type it may hold."""
        from spacy.attrs import LEMMA, ORTH

        types = self._context.keys() & set(entities)
        if not types:
            return False
        words = [w for e in types for w in self._context[e]]
        assert self._lemma_sources is not None
        if any(w in lemma for w in words for lemma in self._lemma_sources):
            return True
        strings = self.nlp.vocab.strings
        for orth, lemma in doc.to_array([ORTH, LEMMA]).tolist():
            if types & self._context_types_of_token(orth):
                return True
            # A lemma set before the lemmatizer runs (by the tokenizer) is kept as it is.
            if lemma and any(w in strings[lemma].lower() for w in words):
                return True
        return False

    # --- the API ------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        import presidio_analyzer
        import spacy

        return {
            "presidio_analyzer": getattr(presidio_analyzer, "__version__", ""),
            "spacy": spacy.__version__,
            "nlp_model": self.nlp_model,
            "entities": self.entities,
            "threshold": self.threshold,
            "recognizers": self.recognizer_names,
        }

    def entities_possible_in(self, text: str) -> list[str]:
        """The entity types this text could hold; Presidio is asked about those only."""
        possible = [e for e, tests in self._filters.items() if any(test(text) for test in tests)]
        return sorted(self._always.union(possible))

    def analyze(self, text: str, entities: Sequence[str] | None = None) -> list[Hit]:
        """One plain ``AnalyzerEngine.analyze`` call (all configured types unless ``entities``)."""
        results = self.reference.analyze(
            text=text, language="en", entities=list(entities or self.entities), score_threshold=self.threshold
        )
        return _hits(results)

    def scan(self, text: str) -> list[Hit]:
        return self.scan_batch([text])[0]

    def scan_batch(self, texts: Sequence[str]) -> list[list[Hit]]:
        """The findings of each text, in order: identical to ``analyze`` on each."""
        todo: dict[str, list[str]] = {}
        for text in texts:
            if text not in todo and text not in self._cache:
                entities = self.entities_possible_in(text)
                if entities:
                    todo[text] = entities
        # spaCy keeps every new string it meets (ids, numbers, addresses) for the life of the
        # process: in a memory zone those of this batch are freed after it, so a worker scanning
        # millions of records, or a server checking prompts for months, does not grow.
        with self.nlp.memory_zone():
            found = dict(zip(todo, self._analyze_batch(list(todo.items())), strict=True))
        out = []
        for text in texts:
            hits = found.get(text)
            if hits is None:
                hits = self._cache.get(text) if text in self._cache else []
                if text in self._cache:
                    self._cache.move_to_end(text)
            else:
                self._cache[text] = hits
                if len(self._cache) > self.CACHE_TEXTS:
                    self._cache.popitem(last=False)
            out.append(hits)
        return out

    def _analyze_batch(self, items: list[tuple[str, list[str]]]) -> list[list[Hit]]:
        if not items:
            return []
        docs: Iterable[Any] = (self.nlp.make_doc(text) for text, _ in items)
        for proc in self._first:
            docs = proc.pipe(docs, batch_size=256)
        out: list[list[Hit] | None] = []
        again: list[tuple[int, Any]] = []
        for doc, (text, entities) in zip(docs, items, strict=True):
            if self._lemma_sources is None:  # the whole pipeline ran: real lemmas
                out.append(self._analyze(text, entities, self.nlp_engine._doc_to_nlp_artifact(doc, "en")))
                continue
            try:
                out.append(self._analyze(text, entities, self._artifacts(doc, entities)))
            except LemmasNeeded:
                out.append(None)
                again.append((len(out) - 1, doc))
        if again:  # the components before ``ner``, in batches, on the texts whose lemmas matter
            completed: Iterable[Any] = (doc for _, doc in again)
            for proc in self._rest:
                completed = proc.pipe(completed, batch_size=256)
            for (i, _), doc in zip(again, completed, strict=True):
                text, entities = items[i]
                out[i] = self._analyze(text, entities, self.nlp_engine._doc_to_nlp_artifact(doc, "en"))
        return out  # type: ignore[return-value]

    def _analyze(self, text: str, entities: list[str], artifacts: Any) -> list[Hit]:
        results = self.analyzer.analyze(
            text=text, language="en", entities=entities, score_threshold=self.threshold, nlp_artifacts=artifacts
        )
        return _hits(results)

    def _artifacts(self, doc: Any, entities: list[str]) -> Any:
        """Presidio's artifacts of a doc that went through ``ner`` only: lemmas on demand."""
        engine = self.nlp_engine
        found, scores = engine._get_updated_entities(engine._get_entities(doc), engine._get_scores_for_entities(doc))
        return self._lazy_artifacts(
            doc=doc, entities=found, scores=scores, nlp_engine=engine, needs=lambda: self._needs_lemmas(doc, entities)
        )

    def scan_iter(self, texts: Iterable[str], *, processes: int = 1, batch: int = 256) -> Iterator[list[Hit]]:
        """The findings of each text, in input order, as a stream: at most ``4 x processes``
        batches of ``batch`` texts are held at a time, whatever the number of texts."""
        chunks = _chunks(texts, batch)
        head = list(islice(chunks, 2))
        chunks = chain(head, chunks)
        # One batch is not worth a fork.
        pool = _fork_pool(self, processes) if processes > 1 and len(head) > 1 else None
        if pool is None:
            for chunk in chunks:
                yield from self.scan_batch(chunk)
            return
        # Closed and joined, never terminated (``with pool`` would): a pool terminated while its
        # task thread still feeds it can hang for good, as the ledger's segmented replay once did
        # when a bad record or a consumer stopping early left batches queued. Those finish first.
        try:
            pending: deque[Any] = deque()
            for chunk in chunks:
                pending.append(pool.apply_async(_scan_in_child, (chunk,)))
                if len(pending) >= 4 * processes:
                    yield from pending.popleft().get()
            while pending:
                yield from pending.popleft().get()
        finally:
            pool.close()
            pool.join()


def _hits(results: Iterable[Any]) -> list[Hit]:
    hits = [Hit(r.entity_type, r.start, r.end, round(r.score, 4)) for r in results]
    # ``Hit`` has no ordering (a frozen dataclass): an explicit key, total over its fields.
    return sorted(hits, key=lambda h: (h.start, h.end, h.entity, h.score))


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(texts)
    while chunk := list(islice(iterator, size)):
        yield chunk


_CHILD_ENGINE: Engine | None = None


def _adopt(engine: Engine) -> None:
    global _CHILD_ENGINE
    _CHILD_ENGINE = engine


def _scan_in_child(texts: list[str]) -> list[list[Hit]]:
    assert _CHILD_ENGINE is not None
    return _CHILD_ENGINE.scan_batch(texts)


def _fork_pool(engine: Engine, processes: int) -> Any:
    """A pool of forked children holding ``engine`` (no second model load), or None where this
    process may not have children (a daemonic pool worker): the caller then works alone."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        logger.info("PII engine: a daemonic process may not fork; scanning in this process")
        return None
    context = multiprocessing.get_context("fork")
    # With fork, the initializer's arguments are inherited, not pickled.
    return context.Pool(processes, initializer=_adopt, initargs=(engine,))
