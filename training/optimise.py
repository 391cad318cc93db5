"""The worker's side of an optimisation run: ONNX Runtime dynamic int8 quantisation of a causal LM
folder, and the measurements that say what it cost.

No Django import; torch, transformers, onnx and onnxruntime are imported inside the functions that
need them. ``quantise_dynamic_int8(source, workdir, texts)`` exports ``source`` to ONNX fp32
(``serving.onnx_model.export_onnx``), quantises its weights to int8 with
``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights, activations quantised at run time),
and measures both on the same texts under the same tokenisation:

- perplexity: ``exp`` of the token-weighted mean negative log-likelihood of each text's tokens after
  the first (each text truncated to ``max_length`` tokens, one text per forward pass, no padding);
- ``perplexity_delta``: ``int8 / fp32 - 1`` (relative; positive when the int8 model is worse);
- latency: the median milliseconds of one forward pass per text (after one warm-up pass), on the
  CPU execution provider with the session's default threads;
- sizes: the bytes of each ``model.onnx``.

The int8 folder (``model.onnx`` beside the tokenizer, ``config.json`` and
``generation_config.json``) is servable as it is by the model server's ``onnx`` runtime.
Caveats: latency depends on the machine (and its other load) and is a figure for comparison on one
machine, not a promise; texts shorter than two tokens carry no prediction and are skipped (none
left: ``OptimisationError``).
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

METHOD = "onnx_dynamic_int8"
SERVED_FILES = ("model.onnx",)


class OptimisationError(ValueError):
    """The source cannot be quantised, or the evaluation texts cannot measure it."""


def _session(model: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])


def _token_ids(folder: Path, texts: list[str], max_length: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoded = [list(tokenizer(text, truncation=True, max_length=max_length)["input_ids"]) for text in texts]
    usable = [ids for ids in encoded if len(ids) >= 2]
    if not usable:
        raise OptimisationError("no evaluation text has two tokens or more: nothing to measure perplexity on")
    return usable


def measure(model: Path, token_ids: list[list[int]]) -> dict[str, float]:
    """Perplexity (token-weighted), the token count and the median latency in ms of ``model``
    (an ONNX file as ``export_onnx`` writes it) over ``token_ids``, one sequence per pass."""
    import numpy as np

    session = _session(model)
    warm = np.asarray([token_ids[0]], dtype=np.int64)
    session.run(["logits"], {"input_ids": warm, "attention_mask": np.ones_like(warm)})
    nll, tokens, latencies = 0.0, 0, []
    for ids in token_ids:
        batch = np.asarray([ids], dtype=np.int64)
        started = time.perf_counter()
        (logits,) = session.run(["logits"], {"input_ids": batch, "attention_mask": np.ones_like(batch)})
        latencies.append((time.perf_counter() - started) * 1000)
        scores = logits[0, :-1].astype(np.float64)
        top = scores.max(axis=-1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(scores - top).sum(axis=-1))
        targets = np.asarray(ids[1:])
        nll += float((log_norm - scores[np.arange(len(targets)), targets]).sum())
        tokens += len(targets)
    mean_nll = nll / tokens
    return {
        "perplexity": math.exp(mean_nll) if mean_nll < 700 else math.inf,
        "mean_nll": mean_nll,
        "tokens": tokens,
        "latency_ms_p50": statistics.median(latencies),
    }


def quantise_dynamic_int8(source: Path, workdir: Path, texts: list[str], *, max_length: int = 128) -> dict[str, Any]:
    """Export ``source`` (a transformers causal LM folder) to ``workdir/fp32``, quantise it into
    ``workdir/int8`` (the output to register) and measure both on ``texts``. Returns the figures:
    ``fp32`` and ``int8`` (perplexity, mean_nll, tokens, latency_ms_p50, size_bytes),
    ``perplexity_delta``, ``size_ratio``, ``records`` (texts measured) and ``max_length``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from serving.onnx_model import MODEL_FILE, OnnxModelError, export_onnx

    fp32, int8 = Path(workdir) / "fp32", Path(workdir) / "int8"
    for stale in (fp32, int8):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        export_onnx(Path(source), fp32)
    except OnnxModelError as exc:
        raise OptimisationError(str(exc)) from None
    token_ids = _token_ids(fp32, texts, max_length)
    int8.mkdir(parents=True)
    quantize_dynamic(fp32 / MODEL_FILE, int8 / MODEL_FILE, weight_type=QuantType.QInt8)
    for path in sorted(fp32.iterdir()):  # tokenizer, config.json, generation_config.json
        if path.is_file() and path.name != MODEL_FILE:
            shutil.copy2(path, int8 / path.name)
    figures: dict[str, Any] = {"records": len(token_ids), "max_length": max_length}
    for name, folder in (("fp32", fp32), ("int8", int8)):
        figures[name] = {**measure(folder / MODEL_FILE, token_ids), "size_bytes": (folder / MODEL_FILE).stat().st_size}
    figures["perplexity_delta"] = figures["int8"]["perplexity"] / figures["fp32"]["perplexity"] - 1
    figures["size_ratio"] = figures["int8"]["size_bytes"] / figures["fp32"]["size_bytes"]
    return figures
