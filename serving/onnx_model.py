"""ONNX Runtime as the model server's second runtime: export a causal LM folder, serve the export.

No Django import; torch, transformers and onnxruntime are imported inside the functions that need
them (each takes seconds to import).

``export_onnx(source, destination)`` writes ``destination/model.onnx`` (the forward pass of a local
transformers causal LM, GPT-2 family at least: ``input_ids`` and ``attention_mask`` in, int64, with
dynamic batch and sequence axes; ``logits`` out) beside the tokenizer, ``config.json`` and
``generation_config.json``, so that the destination folder alone is servable and its
``folder_weights_digest`` is what a grant with runtime ``onnx`` names. It uses torch's
``torch.export``-based exporter (``dynamo=True``, which needs ``onnxscript``): the legacy
TorchScript tracer bakes transformers' mask logic in at the traced sequence length, and its logits
then differ at any other length. Two exports of the same folder with the same versions of torch,
transformers and onnxscript write the same bytes. The weights are inside ``model.onnx`` (no
external data file), so a model over protobuf's 2 GB limit does not export.

``OnnxCausalLM(folder, device=...)`` loads such a folder and decodes greedily. Caveats: the export
has no KV cache, so every new token re-runs the whole sequence (quadratic in its length; fine for
short completions, slow for long ones); only greedy argmax is done, so a ``generation_config.json``
that asks for more (a repetition penalty, forbidden words) is not applied; and ONNX Runtime's float
arithmetic differs from torch's by rounding, so where two logits tie to within that, the argmax, and
so the rest of the completion, may differ from transformers'.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"


class OnnxModelError(ValueError):
    """A folder cannot be exported to ONNX, or an exported folder cannot be loaded."""


def _max_positions(config: Any) -> int:
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1 << 30)


def export_onnx(source: Path, destination: Path) -> None:
    """Export the causal LM in ``source`` to ``destination`` (absent or empty), ready to serve.

    Raises ``OnnxModelError`` for a source that is not a loadable causal LM, a destination that
    holds files (every file there would count in the served folder's digest), or a failed export;
    a failed export leaves no half-written ``model.onnx`` behind.
    """
    source, destination = Path(source), Path(destination)
    if not source.is_dir():
        raise OnnxModelError(f"cannot export {source}: it is not a folder")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise OnnxModelError(f"cannot export to {destination}: it exists and is not an empty folder")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True).eval()
    except Exception as exc:  # no config, an unknown architecture, missing or broken weights
        raise OnnxModelError(f"{source} is not a loadable causal language model: {exc}") from None

    class LogitsOnly(torch.nn.Module):
        """The model's forward pass without a cache, returning only the logits."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    # Two rows of four tokens: an axis of size 1 in the example would be exported as fixed.
    input_ids = torch.arange(8, dtype=torch.int64).reshape(2, 4) % model.config.vocab_size
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {0: batch, 1: sequence}
    existed = destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    try:
        torch.onnx.export(
            LogitsOnly().eval(),
            (input_ids, torch.ones_like(input_ids)),
            destination / MODEL_FILE,
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"input_ids": axes, "attention_mask": axes},
            external_data=False,
            verbose=False,
        )
    except Exception as exc:
        shutil.rmtree(destination, ignore_errors=True)
        if existed:
            destination.mkdir()
        raise OnnxModelError(f"cannot export {source} to ONNX: {type(exc).__name__}: {exc}") from None
    tokenizer.save_pretrained(destination)
    model.config.save_pretrained(destination)
    model.generation_config.save_pretrained(destination)


class OnnxCausalLM:
    """An exported folder under ONNX Runtime, with its tokenizer, for greedy decoding.

    ``device`` is ``cpu`` or ``cuda``; ``cuda`` needs an onnxruntime build with the CUDA provider
    (the ``onnxruntime-gpu`` package, not the pinned CPU one) and raises ``OnnxModelError``
    without it rather than run on the CPU unannounced.
    """

    def __init__(self, folder: Path, *, device: str = "cpu") -> None:
        folder = Path(folder)
        model_path = folder / MODEL_FILE
        if not model_path.is_file():
            raise OnnxModelError(f"{folder} holds no {MODEL_FILE}: export the model with export_onnx first")
        if device not in ("cpu", "cuda"):
            raise OnnxModelError(f"unknown device {device!r} (cpu or cuda)")

        import onnxruntime
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise OnnxModelError("this onnxruntime build has no CUDAExecutionProvider (onnxruntime-gpu has)")
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only, on standard error
        self.session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)
        if self.session.get_providers()[0] != providers[0]:  # ONNX Runtime falls back silently
            raise OnnxModelError(
                f"ONNX Runtime could not start {providers[0]}; it offers {self.session.get_providers()}"
            )
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != (list(INPUT_NAMES), [OUTPUT_NAME]):
            raise OnnxModelError(f"{model_path} takes {names[0]} and gives {names[1]}, not what export_onnx writes")

        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        self.max_positions = _max_positions(config)
        try:
            generation = GenerationConfig.from_pretrained(folder, local_files_only=True)
        except OSError:
            generation = GenerationConfig.from_model_config(config)
        eos = generation.eos_token_id
        self.eos_token_ids = frozenset([] if eos is None else [eos] if isinstance(eos, int) else eos)

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def generate(self, input_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """The greedy continuation of ``input_ids``: at most ``max_new_tokens`` token ids, the end
        of sequence token included when it ends them (as transformers' ``generate`` returns)."""
        import numpy as np

        tokens = list(input_ids)
        if not tokens:
            raise ValueError("there is no input token to continue")
        if len(tokens) + max_new_tokens > self.max_positions:
            raise ValueError(
                f"{len(tokens)} tokens and {max_new_tokens} new ones exceed the model's {self.max_positions} positions"
            )
        new: list[int] = []
        for _ in range(max_new_tokens):
            ids = np.asarray([tokens], dtype=np.int64)
            (logits,) = self.session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
            token = int(logits[0, -1].argmax())
            tokens.append(token)
            new.append(token)
            if token in self.eos_token_ids:
                break
        return new

    def complete(self, prompt: str, max_new_tokens: int) -> str:
        """The decoded greedy completion of ``prompt``, special tokens left out."""
        return self.decode(self.generate(self.encode(prompt), max_new_tokens))
