"""The fine-tune itself: a causal LM, some texts and hyperparameters in; a saved model folder out.

Pure: no Django, no database, no ledger. The governed path (approval re-check, quotas, MLflow, model
registration) lives in ``training.services`` and the tasks, which call :func:`train` here. torch,
transformers and peft are imported inside the functions, so importing this module stays cheap for
the web process, which only needs :meth:`Hyperparameters.validate` and :func:`validate_device`.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TrainerCallback

METHODS = ("full", "lora", "dpo")
# DPO's beta (how far the tuned policy may move from the reference model): TRL's default is 0.1;
# beyond these bounds the loss is flat or the run collapses onto the reference.
DPO_BETA_BOUNDS = (0.01, 5.0)
DPO_BETA_DEFAULT = 0.1
PAIR_FIELDS = ("prompt", "chosen", "rejected")
_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
# A tokenizer that never learnt its limit reports this sentinel (about 1e30); saving it as is would
# tell every later reader that the model takes prompts of any length.
_UNBOUNDED_LENGTH = 10**9

StepCallback = Callable[[int, int, dict[str, float]], bool]


@dataclass(frozen=True)
class Hyperparameters:
    """What a fine-tune run asks for. ``batch_size`` is per device: under torchrun each process
    takes a batch of this size, so one optimizer step sees ``batch_size * WORLD_SIZE`` texts."""

    learning_rate: float
    batch_size: int
    seed: int
    method: str  # "full", "lora" or "dpo" (preference pairs, TRL's DPOTrainer, all weights)
    epochs: int | None = None  # exactly one of epochs / max_steps is set
    max_steps: int | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    max_length: int = 128  # tokens per example, longer texts are truncated
    beta: float | None = None  # dpo only: None takes DPO_BETA_DEFAULT

    def validate(self, n_examples: int) -> None:
        """Raise ``ValueError`` naming the first field that cannot train on ``n_examples`` texts.

        Cheap (no torch), so a request can be refused before any work is queued."""
        if n_examples < 1:
            raise ValueError("texts: at least one training text is needed")
        if not _is_number(self.learning_rate) or not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be a finite number above 0, not {self.learning_rate!r}")
        if not _is_int(self.batch_size) or not 1 <= self.batch_size <= n_examples:
            raise ValueError(
                f"batch_size: must be a whole number from 1 to the number of texts ({n_examples}), "
                f"not {self.batch_size!r}"
            )
        if not _is_int(self.seed):
            raise ValueError(f"seed: must be a whole number, not {self.seed!r}")
        if self.method not in METHODS:
            raise ValueError(f"method: must be one of {', '.join(METHODS)}, not {self.method!r}")
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("epochs/max_steps: set exactly one of epochs and max_steps")
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name}: must be a whole number of at least 1, not {value!r}")
        for name in ("lora_r", "lora_alpha", "max_length"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name}: must be a whole number of at least 1, not {value!r}")
        if self.beta is not None and self.method != "dpo":
            raise ValueError(f"beta: only method dpo takes a beta, not method {self.method}")
        low, high = DPO_BETA_BOUNDS
        if self.beta is not None and (
            not _is_number(self.beta) or not math.isfinite(self.beta) or not low <= self.beta <= high
        ):
            raise ValueError(f"beta: must be a number from {low} to {high}, not {self.beta!r}")


def validate_device(device: str) -> None:
    """Raise ``ValueError`` unless ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Only the form is checked here (no torch); :func:`train` checks that the device exists."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device: must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")


class TrainingCancelled(Exception):
    """``on_step`` asked to stop; the Trainer stopped after that step and nothing was saved."""


@dataclass(frozen=True)
class TrainResult:
    steps: int
    epochs_completed: float
    final_loss: float
    history: list[dict[str, float]]  # one per optimizer step: {"step", "loss", "learning_rate"}
    device: str
    seconds: float


def train(
    *,
    base_folder: Path,
    texts: list[Any],
    params: Hyperparameters,
    device: str,
    output_folder: Path,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Fine-tune the causal LM in ``base_folder`` on ``texts`` and save it with its tokenizer to
    ``output_folder`` (safetensors; a LoRA run is merged first, so the output is a plain model).

    For ``method == "dpo"`` each item of ``texts`` is a preference pair, a dict with non-empty
    ``prompt``, ``chosen`` and ``rejected`` (see :func:`check_pairs`), trained with TRL's
    ``DPOTrainer`` against a frozen copy of the base as the reference model; the step metrics then
    carry TRL's ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies`` and
    ``rewards/margins``, and ``loss`` is the DPO loss.

    ``on_step(step, total_steps, metrics)`` runs after every optimizer step with the step's
    ``loss`` and ``learning_rate``; returning ``False`` stops training and raises
    :class:`TrainingCancelled`.

    Caveats:

    - ``output_folder`` must be absent or empty. The model is written to a staging folder beside it
      and renamed into place, so a failed or cancelled run leaves nothing there.
    - Weights are trained in float32 whatever dtype the base checkpoint was saved in.
    - On CPU the same inputs and seed give byte-identical weights; on GPU kernels may not be
      deterministic.
    - Under ``torchrun`` (WORLD_SIZE > 1) the Trainer runs data-parallel itself; every process
      calls ``on_step`` and each must give the same answer, or the processes wait on each other
      forever. Only the main process saves. ``cuda:N`` must name the GPU the Trainer will use:
      0 in one process, LOCAL_RANK under torchrun; pick a GPU with CUDA_VISIBLE_DEVICES instead.
    - In one process with several visible GPUs and ``device="cuda"``, the Trainer spreads each
      batch over all of them (DataParallel).
    """
    params.validate(len(texts))
    validate_device(device)
    if params.method == "dpo":
        return _train_dpo(
            base_folder=base_folder, pairs=texts, params=params, device=device, output_folder=output_folder,
            on_step=on_step,
        )  # fmt: skip
    if any(not text.strip() for text in texts):
        raise ValueError("texts: every training text must contain something besides whitespace")
    if output_folder.exists() and (not output_folder.is_dir() or any(output_folder.iterdir())):
        raise ValueError(f"output_folder: {output_folder} must be absent or an empty folder")
    _check_device_exists(device)

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    started = time.monotonic()
    output_folder.parent.mkdir(parents=True, exist_ok=True)
    # Seeded before loading, so the LoRA adapters start from the same random weights every time.
    set_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_folder, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True, dtype=torch.float32)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and params.max_length > positions:
        raise ValueError(f"max_length: the base model reads at most {positions} tokens, not {params.max_length}")
    if params.method == "lora":
        from peft import LoraConfig, get_peft_model

        # target_modules=None lets peft pick the attention projections it knows for the
        # architecture: "c_attn" for GPT-2.
        lora = LoraConfig(task_type="CAUSAL_LM", r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=0.0)
        with warnings.catch_warnings():
            # peft turns fan_in_fan_out on by itself for GPT-2's Conv1D layers, and says so.
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
            model = get_peft_model(model, lora)

    encoded = tokenizer(texts, truncation=True, max_length=params.max_length)
    examples = [
        {"input_ids": ids, "attention_mask": mask}
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
    ]
    recorder = _StepRecorder(on_step)
    with tempfile.TemporaryDirectory(prefix=f".{output_folder.name}-", dir=output_folder.parent) as workspace:
        args = TrainingArguments(output_dir=str(Path(workspace) / "trainer"), **_trainer_arguments(params, device))
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=examples,  # type: ignore[arg-type]  # a list is a map-style dataset
            data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False),
            callbacks=[recorder.as_callback()],
        )
        # With tqdm off the Trainer prints every log line to stdout; the history is returned instead.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        if recorder.cancelled:
            raise TrainingCancelled(f"cancelled after step {trainer.state.global_step} of {trainer.state.max_steps}")
        trained: Any = trainer.model
        if params.method == "lora":
            trained = trained.merge_and_unload()
        if trainer.is_world_process_zero():
            staging = Path(workspace) / "model"
            trained.save_pretrained(staging)
            _bound_model_max_length(tokenizer, positions or params.max_length)
            tokenizer.save_pretrained(staging)
            if output_folder.exists():
                output_folder.rmdir()
            staging.rename(output_folder)
        return TrainResult(
            steps=trainer.state.global_step,
            epochs_completed=float(trainer.state.epoch or 0.0),
            final_loss=recorder.history[-1]["loss"] if recorder.history else math.nan,
            history=recorder.history,
            device=str(args.device),
            seconds=time.monotonic() - started,
        )


def check_pairs(pairs: list[Any]) -> None:
    """Raise ``ValueError`` naming the first item that is not a preference pair (a dict with
    non-empty text ``prompt``, ``chosen`` and ``rejected``). Cheap: no torch."""
    for number, pair in enumerate(pairs, start=1):
        if not isinstance(pair, dict):
            raise ValueError(f"pairs: item {number} is not an object with {', '.join(PAIR_FIELDS)}")
        missing = [name for name in PAIR_FIELDS if not isinstance(pair.get(name), str) or not pair[name].strip()]
        if missing:
            raise ValueError(f"pairs: item {number} lacks a non-empty {', '.join(missing)}")


def _train_dpo(
    *,
    base_folder: Path,
    pairs: list[dict[str, str]],
    params: Hyperparameters,
    device: str,
    output_folder: Path,
    on_step: StepCallback | None,
) -> TrainResult:
    """:func:`train` for ``method == "dpo"`` (checked by it): TRL's DPOTrainer on the pairs."""
    check_pairs(pairs)
    if output_folder.exists() and (not output_folder.is_dir() or any(output_folder.iterdir())):
        raise ValueError(f"output_folder: {output_folder} must be absent or an empty folder")
    _check_device_exists(device)

    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import DPOConfig, DPOTrainer

    started = time.monotonic()
    output_folder.parent.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()  # they would go to stderr, the training log, once per map
    set_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_folder, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True, dtype=torch.float32)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and params.max_length > positions:
        raise ValueError(f"max_length: the base model reads at most {positions} tokens, not {params.max_length}")
    train_dataset = datasets.Dataset.from_list([{name: pair[name] for name in PAIR_FIELDS} for pair in pairs])
    recorder = _StepRecorder(on_step)
    with tempfile.TemporaryDirectory(prefix=f".{output_folder.name}-", dir=output_folder.parent) as workspace:
        args = DPOConfig(
            output_dir=str(Path(workspace) / "trainer"),
            beta=params.beta if params.beta is not None else DPO_BETA_DEFAULT,
            max_length=params.max_length,
            **_trainer_arguments(params, device),
        )
        # No ref_model: DPOTrainer keeps a frozen copy of the base as the reference.
        trainer = DPOTrainer(
            model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
            callbacks=[recorder.as_callback()],
        )  # fmt: skip
        # Standard output carries the training process's JSON lines; the Trainer's own prints go.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        if recorder.cancelled:
            raise TrainingCancelled(f"cancelled after step {trainer.state.global_step} of {trainer.state.max_steps}")
        if trainer.is_world_process_zero():
            staging = Path(workspace) / "model"
            trainer.model.save_pretrained(staging)
            _bound_model_max_length(tokenizer, positions or params.max_length)
            tokenizer.save_pretrained(staging)
            if output_folder.exists():
                output_folder.rmdir()
            staging.rename(output_folder)
        return TrainResult(
            steps=trainer.state.global_step,
            epochs_completed=float(trainer.state.epoch or 0.0),
            final_loss=recorder.history[-1]["loss"] if recorder.history else math.nan,
            history=recorder.history,
            device=str(args.device),
            seconds=time.monotonic() - started,
        )


class _StepRecorder:
    """Keeps one history row per optimizer step and asks ``on_step`` whether to go on."""

    def __init__(self, on_step: StepCallback | None) -> None:
        self.on_step = on_step
        self.history: list[dict[str, float]] = []
        self.cancelled = False

    def as_callback(self) -> TrainerCallback:
        from transformers import TrainerCallback

        recorder = self

        class _Callback(TrainerCallback):
            # on_log, not on_step_end: the Trainer computes the step's loss only when it logs, which
            # it does right after on_step_end (logging_steps=1), and still checks should_training_stop
            # before the next batch.
            def on_log(
                self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any
            ) -> Any:
                if logs is None or "loss" not in logs or "train_loss" in logs:
                    return control
                row = {"step": state.global_step, "loss": logs["loss"], "learning_rate": logs["learning_rate"]}
                # DPO's rewards (TRL logs them per step), kept in the history beside the loss.
                row.update({k: float(v) for k, v in logs.items() if k.startswith("rewards/") and _is_number(v)})
                recorder.history.append(row)
                if recorder.on_step is not None:
                    metrics = {key: float(value) for key, value in logs.items() if _is_number(value)}
                    if recorder.on_step(state.global_step, state.max_steps, metrics) is False:
                        recorder.cancelled = True
                        control.should_training_stop = True
                return control

        return _Callback()


def _trainer_arguments(params: Any, device: str) -> dict[str, Any]:
    """The Trainer's arguments both methods share (``TrainingArguments`` and TRL's ``DPOConfig``,
    its subclass): the run's hyperparameters, the device, and nothing saved, logged elsewhere or
    printed but each step's metrics."""
    return {
        "per_device_train_batch_size": params.batch_size,
        "num_train_epochs": float(params.epochs or 1),
        "max_steps": params.max_steps if params.max_steps is not None else -1,
        "learning_rate": params.learning_rate,
        "seed": params.seed,
        "data_seed": params.seed,
        "use_cpu": device == "cpu",
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "steps",
        "logging_steps": 1,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def _check_device_exists(device: str) -> None:
    match = _DEVICE.match(device)
    assert match is not None  # validate_device ran first
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was asked for but torch sees no CUDA device")
    # The Trainer chooses the GPU itself: the first visible one, or LOCAL_RANK's under torchrun.
    expected = int(os.environ.get("LOCAL_RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    if index is not None and int(index) != expected:
        raise ValueError(
            f"device: this process trains on cuda:{expected}, not {device!r}; "
            "choose the GPU with CUDA_VISIBLE_DEVICES and pass 'cuda'"
        )


def _bound_model_max_length(tokenizer: PreTrainedTokenizerBase, limit: int) -> None:
    if not tokenizer.model_max_length or tokenizer.model_max_length > _UNBOUNDED_LENGTH:
        tokenizer.model_max_length = limit


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
