"""Security scans of a local model folder with garak, run in a child process, and their results read back.

Pure: no Django, and neither garak nor torch is imported here. Importing garak is not harmless: it
creates folders under ``$HOME``, points the root logger at a file of its own and sets
``GARAK_LOG_FILE`` in ``os.environ``. So the scan is ``python -m garak`` in a child process, probe
names are checked against garak's source text, and the report is read as JSON lines.

garak reports many failures as success: a probe whose detector needs a model from a hub ends a run
with exit code 0 and nothing evaluated, an unknown probe prints an error and exits 0 without a
report, and a model whose context is too short answers every prompt with nothing (``nones``) while
garak prints PASS or SKIP. ``verdict`` treats all of these as a failed scan, with the reason.

A folder holding ``model.onnx`` (an ONNX export or an int8 quantisation, see ``training.optimise``)
cannot be loaded by garak's transformers pipeline; it is scanned through garak's ``function``
generator and ``audits.checks.garak_onnx`` instead, under ONNX Runtime, so the scan judges the
weights in the folder (its caveats, greedy decoding among them, are in that module).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run here against a local model with no network (garak 0.17.1): each evaluated its prompts.
OFFLINE_PROBES: frozenset[str] = frozenset(
    {
        "ansiescape.AnsiRaw",
        "apikey.GetKey",
        "continuation.ContinueSlursReclaimedSlurs",
        "dan.Ablation_Dan_11_0",
        "dan.DanInTheWild",
        "divergence.Repeat",
        "encoding.InjectBase64",
        "encoding.InjectHex",
        "exploitation.SQLInjectionEcho",
        "goodside.Tag",
        "goodside.WhoIsRiley",
        "grandma.Win10",
        "latentinjection.LatentInjectionFactSnippetEiffel",
        "latentinjection.LatentWhois",
        "leakreplay.GuardianComplete",
        "lmrc.Deadnaming",
        "lmrc.QuackMedicine",
        "malwaregen.TopLevel",
        "phrasing.PastTense",
        "promptinject.HijackHateHumans",
        "snowball.GraphConnectivity",
        "web_injection.MarkdownImageExfil",
    }
)

# A probe, or a whole family, that cannot run without a hub; keys are probe names or family names.
HUB_DEPENDENT: dict[str, str] = {
    "lmrc.Bullying": "its detector unsafe_content.ToxicCommentModel loads garak-llm/toxic-comment-model",
    "atkgen.Tox": "its attacker is garak-llm/attackgeneration-toxicity_gpt2 and its detector "
    "unsafe_content.ToxicCommentModel loads garak-llm/toxic-comment-model",
    "latentinjection.LatentJailbreak": "its detector unsafe_content.ToxicCommentModel loads "
    "garak-llm/toxic-comment-model",
    "realtoxicityprompts.RTPBlank": "its detector unsafe_content.ToxicCommentModel loads garak-llm/toxic-comment-model",
    "misleading.FalseAssertion": "its detector misleading.MustRefuteClaimModel loads "
    "garak-llm/refutation_detector_distilbert",
    "sysprompt_extraction": "its probes load system prompts from hub datasets, and the whole run crashes without them",
    "packagehallucination": "its detectors load package lists from hub datasets, and the probes are skipped "
    "silently without them",
    "topic.WordnetControversial": "it downloads the WordNet lexicon oewn:2023, and is skipped silently without it",
}

DEFAULT_MAX_NEW_TOKENS = 64
LOG_TAIL_LINES = 60
REPORT_NAME = "garak"  # the report is <workdir>/reports/garak.report.jsonl
PROBE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class ProfileError(ValueError):
    """A probe list that cannot be scanned; the message names the offending probe."""


def validate_probes(probes: list[str]) -> None:
    """Refuse a probe list before anything runs: empty, duplicated, malformed or unknown names, probes
    that need a hub, and probes not on ``OFFLINE_PROBES``. Probes are ``family.Class`` names
    without garak's ``probes.`` prefix."""
    if not probes:
        raise ProfileError("the probe list is empty: name at least one probe")
    seen: set[str] = set()
    for probe in probes:
        if not isinstance(probe, str) or not PROBE_NAME.match(probe):
            raise ProfileError(f"unknown probe {probe!r}: probes are named family.Class, e.g. 'lmrc.QuackMedicine'")
        if probe in seen:
            raise ProfileError(f"probe {probe!r} is listed twice")
        seen.add(probe)
        family, _, klass = probe.partition(".")
        classes = _probe_classes(family)
        if classes is None or (klass and klass not in classes):
            raise ProfileError(f"unknown probe {probe!r}")
        hub_reason = HUB_DEPENDENT.get(probe) or HUB_DEPENDENT.get(family)
        if hub_reason:
            raise ProfileError(f"probe {probe!r} needs a model from a hub ({hub_reason}) and cannot run offline")
        if probe not in OFFLINE_PROBES:
            hint = ": name probe classes one by one" if not klass else ""
            raise ProfileError(f"probe {probe!r} has not been verified to run offline{hint}")


@functools.cache
def _probe_classes(family: str) -> frozenset[str] | None:
    """The probe classes of ``garak.probes.<family>``, or None when there is no such module: those in
    the plugin cache garak ships (it lists the classes some modules make in a loop, such as
    promptinject's) and those its source defines. Neither is imported: ``find_spec`` of a top-level
    package only locates it."""
    spec = importlib.util.find_spec("garak")
    if spec is None or spec.origin is None:
        raise RuntimeError("garak is not installed in this interpreter")
    package = Path(spec.origin).parent
    source = package / "probes" / f"{family}.py"
    if family.startswith("_") or not source.is_file():
        return None
    cached = json.loads((package / "resources" / "plugin_cache.json").read_text(encoding="utf-8"))["probes"]
    prefix = f"probes.{family}."
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    return frozenset(name.removeprefix(prefix) for name in cached if name.startswith(prefix)) | frozenset(
        node.name for node in tree.body if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
    )


def is_onnx_folder(model_folder: Path) -> bool:
    """Whether ``model_folder`` holds an ONNX model (``serving.onnx_model.MODEL_FILE``), which the
    checks run under ONNX Runtime rather than transformers."""
    from serving.onnx_model import MODEL_FILE

    return (model_folder / MODEL_FILE).is_file()


def scan_command(
    *,
    model_folder: Path,
    probes: list[str],
    report_prefix: Path,
    generations: int,
    seed: int,
    python: str = sys.executable,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    device: str | None = None,
) -> list[str]:
    """The garak command line that scans ``model_folder`` (a Hugging Face model folder, loaded by
    garak's ``huggingface.Pipeline`` generator) with ``probes``. The report lands at
    ``<report_prefix>.report.jsonl``; garak does not create the prefix's folder. ``device`` None lets
    garak pick (CUDA when there is one).

    A folder holding ``model.onnx`` is scanned by ``audits.checks.garak_onnx.complete`` through
    garak's ``function.Multiple`` generator instead, greedily, with the same ``max_new_tokens``;
    the folder and the device (``cpu``, the default, or ``cuda``) reach it through ``scan_env``."""
    validate_probes(probes)
    if not model_folder.is_absolute() or not report_prefix.is_absolute():
        # garak puts a relative prefix under its data folder, and a relative name on the hub.
        raise ValueError("model_folder and report_prefix must be absolute paths")
    if generations < 1 or max_new_tokens < 1:
        raise ValueError("generations and max_new_tokens must be at least 1")
    if is_onnx_folder(model_folder):
        from audits.checks.garak_onnx import TARGET

        _onnx_device(device)
        target_type, target_name = "function.Multiple", TARGET
        options: dict[str, Any] = {"function": {"Multiple": {"kwargs": {"max_new_tokens": max_new_tokens}}}}
    else:
        hf_args: dict[str, Any] = {} if device is None else {"device": device}
        target_type, target_name = "huggingface", str(model_folder)
        # Generator options are nested by generator module and class, as in garak's config files.
        options = {"huggingface": {"Pipeline": {"max_tokens": max_new_tokens, "hf_args": hf_args}}}
    return [
        python, "-m", "garak",
        "--target_type", target_type,
        "--target_name", target_name,
        "--spec", ",".join(f"probes.{probe}" for probe in probes),
        "--generations", str(generations),
        "--seed", str(seed),
        "--report_prefix", str(report_prefix),
        "--generator_options", json.dumps(options, sort_keys=True),
    ]  # fmt: skip


def _onnx_device(device: str | None) -> str:
    """The ONNX Runtime device for a scan's ``device``: ``cpu`` unless ``cuda`` is asked for."""
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device: an ONNX model is scanned on 'cpu' or 'cuda', not {device!r}")
    return device or "cpu"


def scan_env(workdir: Path, *, model_folder: Path | None = None, device: str | None = None) -> dict[str, str]:
    """``os.environ`` for a garak run that stays offline and writes only under ``workdir``: garak's
    data, cache (NLTK data, plugin cache) and config folders follow the XDG variables, and so does
    the Hugging Face cache when ``HF_HOME`` is not set. For a ``model_folder`` holding
    ``model.onnx``, also the folder and ``device`` for ``audits.checks.garak_onnx``, and this
    project on ``PYTHONPATH`` so that garak can import that module."""
    xdg = workdir / "xdg"
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
            "XDG_DATA_HOME": str(xdg / "data"),
            "XDG_CACHE_HOME": str(xdg / "cache"),
            "XDG_CONFIG_HOME": str(xdg / "config"),
            "GARAK_LOG_FILE": str(workdir / "garak.log"),
            "PYTHONUNBUFFERED": "1",  # so its lines reach on_line as they are printed
            "PYTHONIOENCODING": "utf-8",
        }
    )
    if model_folder is not None and is_onnx_folder(model_folder):
        from audits.checks.garak_onnx import DEVICE_VARIABLE, MODEL_FOLDER_VARIABLE

        project = str(Path(__file__).resolve().parents[2])
        env[MODEL_FOLDER_VARIABLE] = str(model_folder.resolve())
        env[DEVICE_VARIABLE] = _onnx_device(device)
        env["PYTHONPATH"] = os.pathsep.join([project, *filter(None, [env.get("PYTHONPATH")])])
    return env


@dataclass(frozen=True)
class Finding:
    """One eval record of a garak report: how one detector judged one probe's outputs. ``total`` is
    the outputs judged (garak's ``total_evaluated``, ``passed + fails``); ``nones`` were outputs the
    model never gave, and are not in ``total``."""

    probe: str
    detector: str
    passed: int
    fails: int
    nones: int
    total: int

    @property
    def failure_rate(self) -> float:
        """Share of judged outputs that failed; 1.0 when nothing was judged (no evidence is no pass)."""
        return self.fails / self.total if self.total else 1.0

    @property
    def owasp_categories(self) -> list[str]:
        """The OWASP Top 10 for LLM Applications (2025) categories the probe tests, or
        ``["unmapped"]`` (see ``audits.checks.owasp``)."""
        from audits.checks.owasp import probe_categories

        return probe_categories(self.probe)


@dataclass(frozen=True)
class ScanOutcome:
    """What a garak run left behind. ``completed`` is whether its report ends the run with garak's
    completion record; ``log_tail`` holds garak's last output lines (colour codes removed)."""

    returncode: int
    report_path: Path | None
    findings: list[Finding]
    garak_version: str
    seconds: float
    log_tail: str
    completed: bool


def run_scan(
    *,
    model_folder: Path,
    probes: list[str],
    workdir: Path,
    generations: int = 1,
    seed: int = 0,
    timeout_s: float = 1800,
    on_line: Callable[[str], None] | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    device: str | None = None,
) -> ScanOutcome:
    """Scan ``model_folder`` with ``probes`` in a garak child process working in ``workdir``.

    Raises ProfileError for a bad probe list, before anything runs. garak's own failures (a crash,
    a timeout, an unreadable report) never raise: they come back in the outcome for ``verdict`` to
    judge. ``on_line`` gets each output line (stdout and stderr, progress bars included, colour
    codes removed) as it comes, so a caller can beat a heartbeat; an exception from it kills garak
    and propagates. The full output is kept in ``workdir/garak-output.txt``.
    """
    validate_probes(probes)
    workdir = workdir.resolve()
    report_dir = workdir / "reports"
    report_dir.mkdir(parents=True, exist_ok=True)
    report_prefix = report_dir / REPORT_NAME
    report_path = report_dir / f"{REPORT_NAME}.report.jsonl"
    for leftover in ("report.jsonl", "report.html", "hitlog.jsonl"):
        # A report from an earlier run in this folder must not pass for this run's.
        (report_dir / f"{REPORT_NAME}.{leftover}").unlink(missing_ok=True)
    model_folder = model_folder.resolve()
    command = scan_command(
        model_folder=model_folder, probes=probes, report_prefix=report_prefix, generations=generations,
        seed=seed, max_new_tokens=max_new_tokens, device=device,
    )  # fmt: skip
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    started = time.monotonic()
    timed_out = threading.Event()
    with (workdir / "garak-output.txt").open("w", encoding="utf-8") as output:
        # Text mode splits on "\r" too, so each progress bar update arrives as a line of its own.
        process = subprocess.Popen(
            command, cwd=workdir, env=scan_env(workdir, model_folder=model_folder, device=device),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
            errors="replace", start_new_session=True,
        )  # fmt: skip

        def kill_on_timeout() -> None:
            timed_out.set()
            _kill_group(process)

        timer = threading.Timer(timeout_s, kill_on_timeout)
        timer.start()
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                line = ANSI_ESCAPE.sub("", raw).rstrip()
                if not line.strip():
                    continue
                output.write(line + "\n")
                tail.append(line)
                if on_line is not None:
                    on_line(line)
            returncode = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                _kill_group(process)
                process.wait()
            process.stdout.close()
    if timed_out.is_set():
        tail.append(f"garak was killed after running past its {timeout_s:g} s limit")
    findings: list[Finding] = []
    version = ""
    completed = False
    if report_path.exists():
        try:
            findings, version, completed = _read_report(report_path)
        except ValueError as error:
            tail.append(f"the report could not be read: {error}")
    return ScanOutcome(
        returncode=returncode,
        report_path=report_path if report_path.exists() else None,
        findings=findings,
        garak_version=version or _installed_garak_version(),
        seconds=time.monotonic() - started,
        log_tail="\n".join(tail),
        completed=completed,
    )


def _kill_group(process: subprocess.Popen[str]) -> None:
    """Kill garak and whatever it started (it was made the leader of its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _installed_garak_version() -> str:
    try:
        return importlib.metadata.version("garak")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def parse_report(path: Path) -> list[Finding]:
    """The findings of a garak report (its ``eval`` records), in report order. Raises ValueError
    naming the line for a line that is not JSON or an eval record that lacks its counts."""
    return _read_report(path)[0]


def _read_report(path: Path) -> tuple[list[Finding], str, bool]:
    """(findings, garak version from the init record, whether the completion record is there)."""
    findings: list[Finding] = []
    version = ""
    completed = False
    for number, record in _report_records(path):
        kind = record.get("entry_type")
        if kind == "init":
            version = str(record.get("garak_version", ""))
        elif kind == "completion":
            completed = True
        elif kind == "eval":
            findings.append(_finding(path, number, record))
    return findings, version, completed


def _report_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as report:
        for number, line in enumerate(report, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number} is not JSON: {error.msg}: {line[:80]!r}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {number} is not a JSON object: {line[:80]!r}")
            yield number, record


def _finding(path: Path, number: int, record: dict[str, Any]) -> Finding:
    counts = {}
    for key in ("passed", "fails", "nones", "total_evaluated"):
        value = record.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path} line {number}: eval record has no count {key!r}")
        counts[key] = value
    probe, detector = record.get("probe"), record.get("detector")
    if not isinstance(probe, str) or not isinstance(detector, str):
        raise ValueError(f"{path} line {number}: eval record names no probe or detector")
    if counts["passed"] + counts["fails"] != counts["total_evaluated"]:
        raise ValueError(f"{path} line {number}: eval record counts do not add up (passed + fails != total_evaluated)")
    return Finding(
        probe=probe, detector=detector, passed=counts["passed"], fails=counts["fails"], nones=counts["nones"],
        total=counts["total_evaluated"],
    )  # fmt: skip


def verdict(outcome: ScanOutcome, *, probes: list[str], max_failure_rate: float) -> tuple[bool, list[str]]:
    """(passed, reasons). A scan passes only when garak exited 0, its report is complete, every
    requested probe was evaluated by each of its detectors with no empty output, and no detector
    failed more than ``max_failure_rate`` (0.0 to 1.0) of its outputs."""
    if not probes:
        raise ValueError("verdict needs the probes that were requested")
    if not 0.0 <= max_failure_rate <= 1.0:
        raise ValueError("max_failure_rate is a share between 0.0 and 1.0")
    reasons: list[str] = []
    if outcome.returncode != 0:
        reasons.append(f"garak exited with code {outcome.returncode}; its last output:\n{outcome.log_tail}")
    if outcome.report_path is None:
        # garak exits 0 without a report when, e.g., the model does not load; it printed why.
        said = f"; its last output:\n{outcome.log_tail}" if outcome.returncode == 0 else ""
        reasons.append(f"garak wrote no report{said}")
    elif not outcome.completed:
        reasons.append("garak's report has no completion record: the run stopped before its end")
    for probe in probes:
        if not any(finding.probe == probe for finding in outcome.findings):
            reasons.append(f"probe {probe!r} evaluated nothing: no eval record in the report")
    for finding in outcome.findings:
        where = f"probe {finding.probe!r} detector {finding.detector!r}"
        if finding.total == 0:
            reasons.append(f"probe {finding.probe!r} evaluated nothing with detector {finding.detector!r}")
        if finding.nones > 0:
            reasons.append(
                f"{where}: {finding.nones} of {finding.nones + finding.total} outputs were empty (nones): the "
                "model gave no answer, e.g. a prompt longer than its context"
            )
        if finding.total and finding.failure_rate > max_failure_rate:
            reasons.append(
                f"{where}: failure rate {finding.failure_rate:.1%} ({finding.fails}/{finding.total}) is above "
                f"the allowed {max_failure_rate:.1%}"
            )
    return not reasons, reasons
