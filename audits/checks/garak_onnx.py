"""garak's target for an ONNX model folder: a function its ``function.Multiple`` generator calls.

garak 0.17 loads local models with transformers only (``huggingface.Pipeline``), which cannot read
the ``model.onnx`` that a quantisation run registers. Its ``function`` generators call a Python
function per prompt instead: ``garak --target_type function.Multiple --target_name
audits.checks.garak_onnx#complete`` (see ``garak_scan.scan_command``). That function runs in the
garak child process, loads the folder named by ``MODEL_FOLDER_VARIABLE`` (``garak_scan.scan_env``
sets it) once under ONNX Runtime with ``serving.onnx_model.OnnxCausalLM``, and answers greedily, so
the scan judges the int8 weights themselves, not the source they were quantised from.

Pure: no Django, no garak; onnxruntime and transformers are imported when the first prompt comes.

Caveats, where this differs from a scan through ``huggingface.Pipeline``:

- decoding is greedy (the model server's ONNX runtime decodes so too), where garak's pipeline
  samples: each of a prompt's ``generations`` is the same answer, computed once, and the seed
  changes which prompts garak picks but not the answers;
- a prompt that leaves no room for ``max_new_tokens`` within the model's positions gets no answer
  (garak counts it as a ``none``, as it counts the pipeline's failure on such a prompt), rather
  than being truncated;
- the answer is the new text only (the pipeline returns the prompt and its continuation), with
  special tokens left out;
- ONNX Runtime's rounding, and int8 weights, can make answers differ from the source model's.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

MODEL_FOLDER_VARIABLE = "LLMOPS_GARAK_ONNX_FOLDER"
DEVICE_VARIABLE = "LLMOPS_GARAK_ONNX_DEVICE"
TARGET = "audits.checks.garak_onnx#complete"


@functools.cache
def _model(folder: str, device: str) -> Any:
    from serving.onnx_model import OnnxCausalLM

    return OnnxCausalLM(Path(folder), device=device)


def complete(prompt: str, generations: int, max_new_tokens: int = 64, **_: Any) -> list[str]:
    """``generations`` copies of the greedy completion of ``prompt`` by the folder named in
    ``$LLMOPS_GARAK_ONNX_FOLDER``, or ``[]`` (garak: no answer) for a prompt too long for the
    model's positions. Other failures (no such folder, a model ONNX Runtime cannot load) raise,
    so garak stops and the scan fails with the reason in its output."""
    folder = os.environ.get(MODEL_FOLDER_VARIABLE)
    if not folder:
        raise RuntimeError(f"{MODEL_FOLDER_VARIABLE} names no model folder: run the scan through garak_scan.run_scan")
    model = _model(folder, os.environ.get(DEVICE_VARIABLE) or "cpu")
    tokens = model.encode(prompt)
    if not tokens or len(tokens) + max_new_tokens > model.max_positions:
        return []
    return [model.decode(model.generate(tokens, max_new_tokens))] * generations
