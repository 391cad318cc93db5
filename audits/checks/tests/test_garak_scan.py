"""garak scans of a tiny local model, run for real, and the verdicts on what they leave behind.

No database: the scan module is pure. The real run takes its counts from the report; the test
checks them against the per-detector summary lines garak prints on stdout, a second channel that
our parser never reads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audits.checks.garak_scan import (
    HUB_DEPENDENT,
    OFFLINE_PROBES,
    Finding,
    ProfileError,
    ScanOutcome,
    parse_report,
    run_scan,
    scan_command,
    scan_env,
    validate_probes,
    verdict,
)
from conftest import ROOT, subprocess_env
from registry.tiny_model import build_tiny_gpt2

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

# The fastest offline probes measured here: 1 prompt, and 6 prompts judged by two detectors.
FAST_PROBES = ["lmrc.QuackMedicine", "grandma.Win10"]
# Its 127 prompts are longer than the tiny model's 1024 positions (1,881 to 3,727 tokens): every
# output is empty (a "none", now and then ""), each in milliseconds, and garak still exits 0.
TOO_LONG_PROBE = "dan.Ablation_Dan_11_0"
# garak's own line per detector: "<probe>  <detector>: PASS  ok on    6/   6   (attack success rate: ...)".
SUMMARY_LINE = re.compile(r"^\s*(?P<probe>\S+)\s+(?P<detector>\S+): (?:PASS|FAIL|SKIP)\s+ok on\s+(\d+)/\s*(\d+)")


@pytest.fixture(scope="module")
def real_scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real garak run against a tiny GPT-2 built here, its output lines kept as they came."""
    base = tmp_path_factory.mktemp("garak")
    model = build_tiny_gpt2(base / "tiny")
    lines: list[str] = []
    outcome = run_scan(
        model_folder=model, probes=[*FAST_PROBES, TOO_LONG_PROBE], workdir=base / "work", generations=1, seed=0,
        on_line=lines.append, max_new_tokens=16, device="cpu", timeout_s=600,
    )  # fmt: skip
    return {"outcome": outcome, "lines": lines, "workdir": base / "work"}


def test_real_scan_counts_match_what_garak_prints(real_scan: dict[str, Any]) -> None:
    outcome: ScanOutcome = real_scan["outcome"]
    assert outcome.returncode == 0, outcome.log_tail
    assert outcome.completed
    assert outcome.garak_version == "0.17.1"
    assert outcome.report_path == real_scan["workdir"] / "reports" / "garak.report.jsonl"
    by_pair = {(f.probe, f.detector): f for f in outcome.findings}
    assert set(by_pair) == {
        ("lmrc.QuackMedicine", "lmrc.QuackMedicine"),
        ("grandma.Win10", "productkey.Win5x5"),
        ("grandma.Win10", "mitigation.MitigationBypass"),
        (TOO_LONG_PROBE, "dan.DAN"),
        (TOO_LONG_PROBE, "mitigation.MitigationBypass"),
    }
    assert by_pair["lmrc.QuackMedicine", "lmrc.QuackMedicine"].total == 1
    assert {by_pair["grandma.Win10", d].total for d in ("productkey.Win5x5", "mitigation.MitigationBypass")} == {6}
    assert all(f.nones == 0 for f in outcome.findings if f.probe != TOO_LONG_PROBE)
    # Every output of the too-long probe is empty: None (the generator failed on it), and on some
    # machines a single "" (1 of 127, in every run on one of them), which the detectors then
    # evaluate like any text.
    # The counts must be those of the report's own attempts.
    outputs = [
        output
        for line in outcome.report_path.read_text(encoding="utf-8").splitlines()
        if (record := json.loads(line)).get("entry_type") == "attempt" and record.get("status") == 2
        and record.get("probe_classname") == TOO_LONG_PROBE
        for output in record["outputs"]
    ]  # fmt: skip
    texts = [output.get("text") if isinstance(output, dict) else output for output in outputs]
    assert len(texts) == 127 and set(texts) <= {None, ""}
    too_long = {(f.total, f.nones) for f in outcome.findings if f.probe == TOO_LONG_PROBE}
    assert too_long == {(texts.count(""), texts.count(None))}

    printed = {}
    for line in real_scan["lines"]:
        if match := SUMMARY_LINE.match(line):
            printed[match["probe"], match["detector"]] = (int(match[3]), int(match[4]))
    assert printed == {pair: (f.passed, f.total) for pair, f in by_pair.items()}
    # Each finding carries its probe's OWASP Top 10 for LLM Applications (2025) categories.
    assert {f.probe: f.owasp_categories for f in outcome.findings} == {
        "lmrc.QuackMedicine": ["LLM09:2025"], "grandma.Win10": ["LLM01:2025", "LLM02:2025"],
        TOO_LONG_PROBE: ["LLM01:2025"],
    }  # fmt: skip
    # The lines streamed to on_line are also kept whole in the work folder.
    assert (real_scan["workdir"] / "garak-output.txt").read_text(encoding="utf-8").splitlines() == real_scan["lines"]


def test_real_scan_verdict_fails_on_what_garak_let_through(real_scan: dict[str, Any]) -> None:
    outcome: ScanOutcome = real_scan["outcome"]
    probes = [*FAST_PROBES, TOO_LONG_PROBE]
    too_long = [f for f in outcome.findings if f.probe == TOO_LONG_PROBE]
    assert len(too_long) == 2 and all(f.nones > 100 for f in too_long)  # see the test above
    empty = [
        *(f"probe {TOO_LONG_PROBE!r} evaluated nothing with detector {f.detector!r}" for f in too_long if not f.total),
        *(
            f"probe {TOO_LONG_PROBE!r} detector {f.detector!r}: {f.nones} of 127 outputs were empty (nones)"
            for f in too_long
        ),
    ]
    passed, reasons = verdict(outcome, probes=probes, max_failure_rate=1.0)
    assert not passed
    assert sorted(r.split(": the model")[0] for r in reasons) == sorted(empty)

    passed, reasons = verdict(outcome, probes=probes, max_failure_rate=0.0)
    failing = [f for f in outcome.findings if f.fails]
    assert failing  # the random tiny model is no refuser: mitigation.MitigationBypass fails it
    assert len(reasons) == len(empty) + len(failing)
    for finding in failing:
        rate = f"failure rate {finding.failure_rate:.1%} ({finding.fails}/{finding.total}) is above the allowed 0.0%"
        assert f"probe {finding.probe!r} detector {finding.detector!r}: {rate}" in reasons


def test_real_scan_files_stay_in_the_work_folder(real_scan: dict[str, Any]) -> None:
    workdir = real_scan["workdir"]
    assert (workdir / "reports" / "garak.report.html").is_file()
    assert (workdir / "garak.log").is_file()  # GARAK_LOG_FILE, not the data folder
    assert (workdir / "xdg" / "cache" / "garak").is_dir()
    assert not list((workdir / "xdg" / "data" / "garak" / "garak_runs").iterdir())


def test_a_model_garak_cannot_load_fails_though_garak_exits_0(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    stale = tmp_path / "work" / "reports" / "garak.report.jsonl"  # an earlier run's, which must not count
    stale.parent.mkdir(parents=True)
    stale.write_text(eval_line() + "\n" + '{"entry_type": "completion"}\n', encoding="utf-8")
    outcome = run_scan(model_folder=tmp_path / "model", probes=FAST_PROBES, workdir=tmp_path / "work", device="cpu")
    assert (outcome.returncode, outcome.report_path, outcome.findings) == (0, None, [])
    passed, reasons = verdict(outcome, probes=FAST_PROBES, max_failure_rate=1.0)
    assert not passed
    assert reasons[0].startswith("garak wrote no report; its last output:")
    assert "Unrecognized model" in reasons[0]
    assert reasons[1:] == [f"probe {p!r} evaluated nothing: no eval record in the report" for p in FAST_PROBES]


def test_a_scan_past_its_time_limit_is_killed_and_fails(tmp_path: Path) -> None:
    outcome = run_scan(model_folder=tmp_path, probes=FAST_PROBES, workdir=tmp_path / "work", timeout_s=0.5)
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.log_tail.endswith("garak was killed after running past its 0.5 s limit")
    passed, reasons = verdict(outcome, probes=FAST_PROBES, max_failure_rate=1.0)
    assert not passed
    assert reasons[0].startswith(f"garak exited with code {-signal.SIGKILL}; its last output:")


def test_an_error_in_on_line_kills_garak_and_propagates(tmp_path: Path) -> None:
    pids: list[int] = []

    class Cancelled(Exception):
        """What a heartbeat might raise when the run was cancelled."""

    def stop(line: str) -> None:
        raise Cancelled

    real_popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        process = real_popen(*args, **kwargs)
        pids.append(process.pid)
        return process

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", recording_popen)
        with pytest.raises(Cancelled):
            run_scan(model_folder=tmp_path, probes=FAST_PROBES, workdir=tmp_path / "work", on_line=stop)
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)


def test_scan_command_and_env(tmp_path: Path) -> None:
    command = scan_command(
        model_folder=tmp_path / "model", probes=FAST_PROBES, report_prefix=tmp_path / "r" / "scan", generations=2,
        seed=7, python="/usr/bin/python3", max_new_tokens=12, device="cpu",
    )  # fmt: skip
    assert command[:3] == ["/usr/bin/python3", "-m", "garak"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags["--target_type"] == "huggingface"
    assert flags["--target_name"] == str(tmp_path / "model")
    assert flags["--spec"] == "probes.lmrc.QuackMedicine,probes.grandma.Win10"
    assert (flags["--generations"], flags["--seed"]) == ("2", "7")
    assert flags["--report_prefix"] == str(tmp_path / "r" / "scan")
    assert json.loads(flags["--generator_options"]) == {
        "huggingface": {"Pipeline": {"max_tokens": 12, "hf_args": {"device": "cpu"}}}
    }
    with pytest.raises(ValueError, match="absolute"):
        scan_command(model_folder=Path("model"), probes=FAST_PROBES, report_prefix=tmp_path, generations=1, seed=0)

    env = scan_env(tmp_path)
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] == ""
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "GARAK_LOG_FILE"):
        assert Path(env[name]).is_relative_to(tmp_path)


@pytest.mark.parametrize(
    ("probes", "message"),
    [
        (["lmrc.Bullying"], r"probe 'lmrc.Bullying' needs a model from a hub \(.*toxic-comment-model\) and cannot run"),
        (["lmrc.NoSuchProbe"], r"unknown probe 'lmrc.NoSuchProbe'"),
        (["nosuchfamily.Probe"], r"unknown probe 'nosuchfamily.Probe'"),
        (["../etc.passwd"], r"unknown probe '../etc.passwd'"),
        (["sysprompt_extraction"], r"probe 'sysprompt_extraction' needs a model from a hub .*crashes"),
        (["sysprompt_extraction.SystemPromptExtraction"], r"'sysprompt_extraction.SystemPromptExtraction' needs"),
        (["packagehallucination.Python"], r"'packagehallucination.Python' needs a model from a hub"),
        (["topic.WordnetControversial"], r"'topic.WordnetControversial' needs a model from a hub"),
        (["dan.AutoDAN"], r"probe 'dan.AutoDAN' has not been verified to run offline"),
        (["lmrc"], r"probe 'lmrc' has not been verified to run offline: name probe classes"),
        ([], r"the probe list is empty"),
        (["lmrc.QuackMedicine", "lmrc.QuackMedicine"], r"probe 'lmrc.QuackMedicine' is listed twice"),
    ],
)
def test_bad_probes_are_refused_before_anything_runs(
    probes: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process was started for a refused probe list")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    with pytest.raises(ProfileError, match=message):
        validate_probes(probes)
    with pytest.raises(ProfileError, match=message):
        run_scan(model_folder=tmp_path, probes=probes, workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_the_allow_list_names_probes_that_exist_and_need_no_hub() -> None:
    validate_probes(sorted(OFFLINE_PROBES))
    assert not OFFLINE_PROBES & set(HUB_DEPENDENT)
    for probe in HUB_DEPENDENT:
        with pytest.raises(ProfileError, match="needs a model from a hub"):
            validate_probes([probe])


def outcome_with(*findings: Finding, returncode: int = 0, completed: bool = True, report: bool = True) -> ScanOutcome:
    return ScanOutcome(
        returncode=returncode, report_path=Path("/scan/garak.report.jsonl") if report else None,
        findings=list(findings), garak_version="0.17.1", seconds=1.0, log_tail="last words", completed=completed,
    )  # fmt: skip


CLEAN = Finding(probe="lmrc.QuackMedicine", detector="lmrc.QuackMedicine", passed=4, fails=1, nones=0, total=5)


def test_verdict_passes_a_clean_scan() -> None:
    assert verdict(outcome_with(CLEAN), probes=["lmrc.QuackMedicine"], max_failure_rate=0.2) == (True, [])
    assert CLEAN.failure_rate == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (
            outcome_with(Finding("lmrc.QuackMedicine", "lmrc.QuackMedicine", 4, 0, 3, 4)),
            "probe 'lmrc.QuackMedicine' detector 'lmrc.QuackMedicine': 3 of 7 outputs were empty (nones)",
        ),
        (
            outcome_with(Finding("lmrc.QuackMedicine", "lmrc.QuackMedicine", 0, 0, 0, 0)),
            "probe 'lmrc.QuackMedicine' evaluated nothing with detector 'lmrc.QuackMedicine'",
        ),
        (outcome_with(), "probe 'lmrc.QuackMedicine' evaluated nothing: no eval record in the report"),
        (outcome_with(CLEAN, returncode=1), "garak exited with code 1; its last output:\nlast words"),
        (outcome_with(CLEAN, report=False), "garak wrote no report; its last output:\nlast words"),
        (outcome_with(CLEAN, completed=False), "garak's report has no completion record"),
        (
            outcome_with(Finding("lmrc.QuackMedicine", "lmrc.QuackMedicine", 3, 2, 0, 5)),
            "probe 'lmrc.QuackMedicine' detector 'lmrc.QuackMedicine': failure rate 40.0% (2/5) is above the allowed "
            "20.0%",
        ),
    ],
)
def test_verdict_fails(outcome: ScanOutcome, reason: str) -> None:
    passed, reasons = verdict(outcome, probes=["lmrc.QuackMedicine"], max_failure_rate=0.2)
    assert not passed
    assert any(r.startswith(reason) for r in reasons), reasons


def test_a_requested_probe_missing_among_others_fails() -> None:
    passed, reasons = verdict(outcome_with(CLEAN), probes=["lmrc.QuackMedicine", "lmrc.Deadnaming"], max_failure_rate=1)
    assert (passed, reasons) == (False, ["probe 'lmrc.Deadnaming' evaluated nothing: no eval record in the report"])


def eval_line(**overrides: Any) -> str:
    record = {"entry_type": "eval", "probe": "lmrc.QuackMedicine", "detector": "lmrc.QuackMedicine", "passed": 1}
    record |= {"fails": 0, "nones": 0, "total_evaluated": 1, "total_processed": 1} | overrides
    return json.dumps(record)


def test_parse_report_reads_eval_records(tmp_path: Path) -> None:
    report = tmp_path / "r.report.jsonl"
    lines = ['{"entry_type": "init", "garak_version": "0.17.1"}', eval_line(), "", eval_line(detector="x.Y", nones=2)]
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert parse_report(report) == [
        Finding("lmrc.QuackMedicine", "lmrc.QuackMedicine", 1, 0, 0, 1),
        Finding("lmrc.QuackMedicine", "x.Y", 1, 0, 2, 1),
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"entry_type": "eval", "probe": ', r"line 3 is not JSON"),
        ("[1, 2]", r"line 3 is not a JSON object"),
        (eval_line(fails=None), r"line 3: eval record has no count 'fails'"),
        (eval_line(fails=1), r"line 3: eval record counts do not add up"),
    ],
)
def test_parse_report_names_the_malformed_line(tmp_path: Path, bad: str, message: str) -> None:
    report = tmp_path / "r.report.jsonl"
    report.write_text("\n".join(['{"entry_type": "init"}', eval_line(), bad, eval_line()]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        parse_report(report)


def test_importing_the_module_imports_neither_garak_nor_torch() -> None:
    probe = (
        "import json, sys\n"
        "import audits.checks.garak_scan as scan\n"
        "scan.validate_probes(['lmrc.QuackMedicine'])\n"
        "print(json.dumps([m for m in ('garak', 'torch', 'transformers', 'django') if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
