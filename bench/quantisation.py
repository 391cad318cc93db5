"""python -m bench.quantisation: ONNX Runtime dynamic int8 against the fp32 export, on two generated
GPT-2 models: the tests' tiny one (2 layers, 32 wide) and a larger one (4 layers, 256 wide, 1024
positions), each trained ``BENCH_TRAIN_STEPS`` full-batch steps (default 60) on the tiny corpus so
that int8 rounding costs perplexity as it does a trained model (random weights give a delta that
is noise around zero).

Each model goes through ``training.optimise.quantise_dynamic_int8``, the worker's own step:
export to ONNX fp32, ``quantize_dynamic`` (QInt8 weights), then perplexity (token-weighted) and the
median latency of one forward pass per record on ``BENCH_RECORDS`` evaluation records (default 64,
sentences of the corpus's kind, some unseen), on the CPU execution provider. Sizes are the bytes of
each ``model.onnx``. Latency figures are for comparison on one machine. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODELS = {"tiny": {"n_embd": 32, "n_layer": 2, "n_head": 2}, "small": {"n_embd": 256, "n_layer": 4, "n_head": 4}}


def _texts(records: int) -> list[str]:
    subjects = ["the customer", "the agent", "a buyer", "our team", "the courier"]
    verbs = ["asked about the refund", "answered politely", "shipped the order", "kept the ticket number"]
    return [f"{subjects[i % 5]} {verbs[i % 4]} on day {i % 9} and the request was closed" for i in range(records)]


def _build(folder: Path, shape: dict[str, int], steps: int) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from registry.tiny_model import CORPUS, MAX_POSITIONS, build_tiny_gpt2

    tokenizer_folder = build_tiny_gpt2(folder.parent / f"{folder.name}-tokenizer")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_folder, local_files_only=True)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=MAX_POSITIONS, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **shape,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    batch = tokenizer(sorted(set(CORPUS)), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2 if shape["n_embd"] <= 64 else 1e-3)
    model.train()
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> dict[str, Any]:
    from training.optimise import quantise_dynamic_int8

    steps = int(os.environ.get("BENCH_TRAIN_STEPS", "60"))
    texts = _texts(int(os.environ.get("BENCH_RECORDS", "64")))
    result: dict[str, Any] = {"records": len(texts), "train_steps": steps, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in MODELS.items():
            source = _build(Path(tmp) / name, shape, steps)
            started = time.perf_counter()
            figures = quantise_dynamic_int8(source, Path(tmp) / f"{name}-work", texts)
            result[name] = {
                **shape,
                "fp32": {k: round(v, 4) for k, v in figures["fp32"].items()},
                "int8": {k: round(v, 4) for k, v in figures["int8"].items()},
                "perplexity_delta": round(figures["perplexity_delta"], 6),
                "size_ratio": round(figures["size_ratio"], 4),
                "latency_ratio": round(figures["int8"]["latency_ms_p50"] / figures["fp32"]["latency_ms_p50"], 4),
                "tokens": figures["fp32"]["tokens"],
                "seconds": round(time.perf_counter() - started, 1),
            }
            for side in ("fp32", "int8"):
                result[name][side].pop("tokens", None)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(json.dumps(main()))
