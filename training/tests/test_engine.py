"""The training engine on a tiny GPT-2 it builds itself: real Trainer runs on CPU, a few steps each."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from registry.tiny_model import build_tiny_gpt2
from training.engine import Hyperparameters, TrainingCancelled, train, validate_device

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

ROOT = Path(__file__).resolve().parents[2]
SUBJECTS = ["refund", "order", "ticket", "return", "delivery", "invoice", "password", "account"]
VERBS = ["was approved", "ships today", "is closed", "needs a receipt", "is late"]
TEXTS = [f"your {subject} {verb}" for subject in SUBJECTS for verb in VERBS]  # 40 texts
FULL = Hyperparameters(learning_rate=5e-3, batch_size=4, seed=7, method="full", max_steps=20)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("engine") / "base")


def _weights(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_full_fine_tune_learns_and_saves_a_loadable_model(base: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls: list[tuple[int, int, dict[str, float]]] = []

    def on_step(step: int, total: int, metrics: dict[str, float]) -> bool:
        calls.append((step, total, metrics))
        return True

    out = tmp_path / "tuned"
    result = train(base_folder=base, texts=TEXTS, params=FULL, device="cpu", output_folder=out, on_step=on_step)

    assert result.steps == 20 and result.device == "cpu"
    assert result.epochs_completed == pytest.approx(2.0)  # 20 steps of 4 over 40 texts
    assert [row["step"] for row in result.history] == list(range(1, 21))
    assert all(set(row) == {"step", "loss", "learning_rate"} for row in result.history)
    losses = [row["loss"] for row in result.history]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    assert result.final_loss == losses[-1]
    assert [(step, total) for step, total, _ in calls] == [(step, 20) for step in range(1, 21)]
    assert {"loss", "learning_rate"} <= set(calls[0][2]) and calls[-1][2]["loss"] == losses[-1]

    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert type(model).__name__ == "GPT2LMHeadModel"
    tuned, original = _weights(out), _weights(base)
    assert tuned.keys() == original.keys()
    assert not torch.equal(tuned["transformer.h.0.mlp.c_fc.weight"], original["transformer.h.0.mlp.c_fc.weight"])
    assert AutoTokenizer.from_pretrained(out, local_files_only=True).model_max_length == 1024
    assert not list(tmp_path.glob(".*")), "the staging workspace is cleaned up"


def test_lora_is_merged_into_a_plain_model(base: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    params = replace(FULL, method="lora", max_steps=4, lora_r=4, lora_alpha=8)
    out = tmp_path / "lora"
    result = train(base_folder=base, texts=TEXTS, params=params, device="cpu", output_folder=out)

    assert result.steps == 4
    tuned, original = _weights(out), _weights(base)
    assert tuned.keys() == original.keys()
    assert not any("lora" in key or "base_model" in key for key in tuned)
    assert not (out / "adapter_config.json").exists()
    assert not torch.equal(tuned["transformer.h.0.attn.c_attn.weight"], original["transformer.h.0.attn.c_attn.weight"])
    # LoRA touched only the attention projection it targeted.
    assert torch.equal(tuned["transformer.h.0.mlp.c_fc.weight"], original["transformer.h.0.mlp.c_fc.weight"])
    assert type(AutoModelForCausalLM.from_pretrained(out, local_files_only=True)).__name__ == "GPT2LMHeadModel"


def test_on_step_returning_false_cancels_and_writes_nothing(base: Path, tmp_path: Path) -> None:
    seen: list[int] = []

    def on_step(step: int, total: int, metrics: dict[str, float]) -> bool:
        seen.append(step)
        return step < 3

    parent = tmp_path / "runs"
    out = parent / "cancelled"
    with pytest.raises(TrainingCancelled, match="step 3 of 10"):
        train(
            base_folder=base,
            texts=TEXTS,
            params=replace(FULL, max_steps=10),
            device="cpu",
            output_folder=out,
            on_step=on_step,
        )
    assert seen == [1, 2, 3]
    assert not out.exists()
    assert list(parent.iterdir()) == []


def test_same_seed_gives_byte_identical_weights(base: Path, tmp_path: Path) -> None:
    params = replace(FULL, max_steps=3)
    digests = []
    for name in ("first", "second"):
        train(base_folder=base, texts=TEXTS, params=params, device="cpu", output_folder=tmp_path / name)
        digests.append((tmp_path / name / "model.safetensors").read_bytes())
    assert digests[0] == digests[1]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"batch_size": len(TEXTS) + 1}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 1, "max_steps": 5}, "epochs/max_steps"),
        ({"epochs": None, "max_steps": None}, "epochs/max_steps"),
        ({"max_steps": 0}, "max_steps"),
        ({"method": "qlora"}, "method"),
        ({"lora_r": 0}, "lora_r"),
        ({"max_length": 0}, "max_length"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_field(
    changes: dict[str, object], field: str, tmp_path: Path
) -> None:
    params = replace(FULL, **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^{field}:"):
        params.validate(len(TEXTS))
    # train() refuses before it loads anything: this base folder does not exist.
    with pytest.raises(ValueError, match=rf"^{field}:"):
        train(base_folder=tmp_path / "missing", texts=TEXTS, params=params, device="cpu", output_folder=tmp_path / "o")


def test_bad_texts_devices_and_output_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^texts:"):
        FULL.validate(0)
    with pytest.raises(ValueError, match=r"^texts:"):
        train(base_folder=tmp_path, texts=[*TEXTS, "  "], params=FULL, device="cpu", output_folder=tmp_path / "o")
    for device in ("gpu", "cuda:", "CPU", "cuda:0:1", ""):
        with pytest.raises(ValueError, match=r"^device:"):
            validate_device(device)
    for device in ("cpu", "cuda", "cuda:0", "cuda:3"):
        validate_device(device)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("earlier work")
    with pytest.raises(ValueError, match=r"^output_folder:"):
        train(base_folder=tmp_path, texts=TEXTS, params=FULL, device="cpu", output_folder=occupied)


def test_importing_the_engine_loads_no_heavy_library() -> None:
    code = (
        "import sys, training.engine\n"
        "heavy = {'torch', 'transformers', 'peft', 'django'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
