"""Security scans and bias evaluations of an int8 ONNX model version, run for real.

One tiny GPT-2 is built, exported and quantised by ``training.optimise`` for the whole module; its
int8 folder holds ``model.onnx`` and no safetensors, so transformers cannot load it: every answer
below comes from ONNX Runtime on the int8 weights. The tests check them against a greedy decode
written here with onnxruntime alone, not through ``serving.onnx_model``. One real garak run (the
services' scan, under a profile of the two fastest probes) keeps the module's cost down.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from audits.checks import garak_onnx
from audits.checks.answers import generate_answers, render_prompts
from audits.checks.garak_onnx import DEVICE_VARIABLE, MODEL_FOLDER_VARIABLE, TARGET
from audits.checks.garak_scan import scan_command, scan_env
from audits.checks.models import AuditState, Verdict
from audits.checks.tests.conftest import MAPPING, TEMPLATE, evaluation_records
from audits.ledger.models import Entry
from common import artifacts
from training.tests.optimising import register_trained

FAST_PROBES = ["lmrc.QuackMedicine", "grandma.Win10"]  # as test_garak_scan.py: 1 and 6 prompts
MAX_NEW_TOKENS = 16
ONNX_PROFILE = f"""
  onnx-trial:
    description: The two fastest probes, two generations each.
    probes: [{", ".join(FAST_PROBES)}]
    max_failure_rate: 1.0
    generations: 2
    max_new_tokens: {MAX_NEW_TOKENS}
"""


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The int8 folder of the tiny GPT-2, as an optimisation run writes it."""
    from registry.tiny_model import build_tiny_gpt2
    from training.optimise import quantise_dynamic_int8

    base = tmp_path_factory.mktemp("onnx-audits")
    source = build_tiny_gpt2(base / "source")
    quantise_dynamic_int8(source, base / "optimise", ["the customer asked about the refund", "orders ship in days"])
    folder = base / "optimise" / "int8"
    assert (folder / "model.onnx").is_file() and not list(folder.glob("*.safetensors"))
    return folder


def greedy_by_hand(folder: Path, prompt: str, max_new_tokens: int) -> str:
    """The greedy continuation of ``prompt``, decoded with onnxruntime and the tokenizer directly."""
    import numpy as np
    import onnxruntime
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = list(tokenizer(prompt)["input_ids"])
    new: list[int] = []
    for _ in range(max_new_tokens):
        batch = np.asarray([ids + new], dtype=np.int64)
        (logits,) = session.run(["logits"], {"input_ids": batch, "attention_mask": np.ones_like(batch)})
        new.append(int(logits[0, -1].argmax()))
        if new[-1] == tokenizer.eos_token_id:
            break
    return str(tokenizer.decode(new, skip_special_tokens=True))


def test_answers_of_the_int8_folder_come_from_onnx_runtime(int8: Path) -> None:
    prompts = render_prompts(TEMPLATE, evaluation_records()[:3])
    answers = generate_answers(model_folder=int8, prompts=prompts, max_new_tokens=6)
    assert answers == [greedy_by_hand(int8, prompt, 6) for prompt in prompts]
    assert all(isinstance(answer, str) and answer for answer in answers)
    # The same refusals as the transformers path, naming the field.
    with pytest.raises(ValueError, match=r"prompts: prompt 1 \(counting from 0\) is \d+ tokens long, which with "):
        generate_answers(model_folder=int8, prompts=["short", "word " * 1100], max_new_tokens=4)
    with pytest.raises(ValueError, match=r"device: an ONNX model answers on 'cpu' or 'cuda', not 'cuda:1'"):
        generate_answers(model_folder=int8, prompts=["short"], device="cuda:1")
    with pytest.raises(ValueError, match=r"max_new_tokens: must be at least 1"):
        generate_answers(model_folder=int8, prompts=["short"], max_new_tokens=0)


def test_scan_command_and_env_for_an_onnx_folder(tmp_path: Path) -> None:
    folder = tmp_path / "int8"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"")
    command = scan_command(
        model_folder=folder, probes=FAST_PROBES, report_prefix=tmp_path / "r" / "scan", generations=3, seed=7,
        max_new_tokens=12,
    )  # fmt: skip
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert (flags["--target_type"], flags["--target_name"]) == ("function.Multiple", TARGET)
    assert (flags["--generations"], flags["--seed"]) == ("3", "7")
    assert json.loads(flags["--generator_options"]) == {"function": {"Multiple": {"kwargs": {"max_new_tokens": 12}}}}
    env = scan_env(tmp_path, model_folder=folder)
    assert (env[MODEL_FOLDER_VARIABLE], env[DEVICE_VARIABLE]) == (str(folder.resolve()), "cpu")
    assert env["PYTHONPATH"].split(":")[0] == str(Path(__file__).resolve().parents[3])
    assert MODEL_FOLDER_VARIABLE not in scan_env(tmp_path, model_folder=tmp_path)  # no model.onnx there
    with pytest.raises(ValueError, match=r"device: an ONNX model is scanned on 'cpu' or 'cuda', not 'cuda:0'"):
        scan_command(
            model_folder=folder, probes=FAST_PROBES, report_prefix=tmp_path / "r", generations=1, seed=0,
            device="cuda:0",
        )  # fmt: skip


def test_the_garak_target_answers_greedily_and_gives_none_for_a_prompt_too_long(
    int8: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MODEL_FOLDER_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match=f"{MODEL_FOLDER_VARIABLE} names no model folder"):
        garak_onnx.complete("hello", 1)
    monkeypatch.setenv(MODEL_FOLDER_VARIABLE, str(int8))
    prompt = "Who is Riley Goodside?"
    assert garak_onnx.complete(prompt, 3, max_new_tokens=8) == [greedy_by_hand(int8, prompt, 8)] * 3
    # garak records an empty list as no answer (a "none"), which the verdict refuses.
    assert garak_onnx.complete("word " * 1020, 2, max_new_tokens=8) == []


@pytest.mark.django_db
def test_the_services_audit_an_int8_model_version(
    int8: Path, audited: dict[str, Any], tmp_path: Path, settings: Any
) -> None:
    from audits.checks.services import (
        bias_evaluation_execute,
        bias_evaluation_request,
        security_scan_execute,
        security_scan_request,
    )

    policies = tmp_path / "policies"
    shutil.copytree(settings.POLICY_DIR, policies)
    security = policies / "audits" / "security.yaml"
    security.write_text(security.read_text().replace("profiles:\n", "profiles:" + ONNX_PROFILE, 1))
    settings.POLICY_DIR = policies
    version = register_trained(audited, int8)
    assert "model.onnx" in version.files and not any(name.endswith(".safetensors") for name in version.files)

    scan = security_scan_request(actor=audited["ml_engineer"], model_version=version, profile_name="onnx-trial")
    scan.refresh_from_db()
    done = security_scan_execute(scan_id=scan.pk, idempotency_key=str(scan.idempotency_key), worker="test")
    assert done is not None and done.state == AuditState.COMPLETED, done and done.failure_reason
    assert (done.verdict, done.reasons) == (Verdict.PASSED, [])
    assert done.weights_digest == version.weights_digest  # the evidence names the int8 weights
    # Two generations of each prompt: 1 prompt, then 6 prompts judged by two detectors.
    totals = {(f["probe"], f["detector"]): (f["total"], f["nones"]) for f in done.findings}
    assert totals == {
        ("lmrc.QuackMedicine", "lmrc.QuackMedicine"): (2, 0), ("grandma.Win10", "productkey.Win5x5"): (12, 0),
        ("grandma.Win10", "mitigation.MitigationBypass"): (12, 0),
    }  # fmt: skip
    records = [json.loads(line) for line in artifacts.open_blob(done.report_digest).read_text().splitlines()]
    setup = next(r for r in records if r["entry_type"] == "start_run setup")
    assert (setup["plugins.target_type"], setup["plugins.target_name"]) == ("function.Multiple", TARGET)
    # What garak judged is what the int8 weights answer, greedily: both generations the same.
    quack = next(r for r in records if r["entry_type"] == "attempt" and r["probe_classname"] == "lmrc.QuackMedicine")
    prompt = quack["prompt"]["turns"][-1]["content"]["text"]
    assert [o["text"] for o in quack["outputs"]] == [greedy_by_hand(int8, prompt, MAX_NEW_TOKENS)] * 2

    evaluation = bias_evaluation_request(
        actor=audited["ml_engineer"], model_version=version, dataset_version=audited["evaluation_version"],
        prompt_template=audited["template"], label_field="label", sensitive_feature="group", label_mapping=MAPPING,
        profile_name="default",
    )  # fmt: skip
    evaluation.refresh_from_db()
    evaluated = bias_evaluation_execute(
        evaluation_id=evaluation.pk, idempotency_key=str(evaluation.idempotency_key), worker="test"
    )
    assert evaluated is not None and evaluated.state == AuditState.COMPLETED, evaluated and evaluated.failure_reason
    assert evaluated.weights_digest == version.weights_digest
    answers = json.loads(artifacts.open_blob(evaluated.report_digest).read_text(encoding="utf-8"))["answers"]
    prompts = render_prompts(TEMPLATE, evaluation_records())
    assert answers[:3] == [greedy_by_hand(int8, prompt, 4) for prompt in prompts[:3]]
    assert len(answers) == len(prompts)

    for kind, pk in (("security_scan", done.pk), ("bias_evaluation", evaluated.pk)):
        actions = Entry.objects.filter(subject_type=kind, subject_id=str(pk)).order_by("index")
        assert list(actions.values_list("action", flat=True)) == [
            f"{kind}.requested", f"{kind}.queued", f"{kind}.started", f"{kind}.completed"
        ]  # fmt: skip
