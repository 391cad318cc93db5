"""The model under audit answers each record of an evaluation set through a prompt template.

Pure module, no Django: the bias worker calls it. torch and transformers (and onnxruntime) are
imported inside :func:`generate_answers` only, so importing this module costs nothing. A folder
holding ``model.onnx`` (an ONNX export or an int8 quantisation) answers under ONNX Runtime, so an
evaluation of it measures those weights, not the source's.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def render_prompts(template: str, records: list[dict[str, str]]) -> list[str]:
    """Fill each ``{field}`` placeholder of ``template`` from each record, in order.

    ``{{`` and ``}}`` stand for literal braces. A placeholder is a field name taken verbatim (spaces,
    dots and brackets included); positional ``{}``, conversions (``{x!r}``) and format specs
    (``{x:>5}``) are refused rather than half-supported. Values are inserted as they are, never
    formatted, so a record cannot reach into Python objects the way ``str.format`` would let it.

    Raises ``ValueError`` for a malformed template, and for a placeholder naming a field that a
    record lacks or holds something other than a string, naming the field and the record's index
    (counting from 0).
    """
    pieces = _parse_template(template)
    prompts = []
    for index, record in enumerate(records):
        parts = []
        for literal, field in pieces:
            parts.append(literal)
            if field is None:
                continue
            if field not in record:
                raise ValueError(f"template field {field!r} is missing from record {index} (counting from 0)")
            value = record[field]
            if not isinstance(value, str):
                raise ValueError(
                    f"template field {field!r} of record {index} (counting from 0) is a {type(value).__name__}, "
                    "not a string"
                )
            parts.append(value)
        prompts.append("".join(parts))
    return prompts


def _parse_template(template: str) -> list[tuple[str, str | None]]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"template: {error} (write {{{{ and }}}} for literal braces)") from error
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            pieces.append((literal, None))
            continue
        if field == "":
            raise ValueError("template: an empty placeholder {} names no field")
        if conversion is not None or spec:
            raise ValueError(
                f"template: placeholder {{{field}}} carries a conversion or format spec; "
                "only plain {field} placeholders are supported"
            )
        pieces.append((literal, field))
    return pieces


def generate_answers(
    *,
    model_folder: Path,
    prompts: list[str],
    max_new_tokens: int = 4,
    device: str = "cpu",
    batch_size: int = 8,
    seed: int = 0,
) -> list[str]:
    """Greedy answers of the causal LM saved in ``model_folder``, one per prompt, in order.

    Loads the model and its tokenizer with ``local_files_only=True`` (a missing file fails, nothing
    is downloaded), pads on the left so every prompt's continuation starts at the same column, and
    returns only the new text of each prompt, special tokens removed, not stripped.

    Caveats: answers are deterministic for the same model, prompts, ``batch_size`` and device; a
    different ``batch_size`` changes the padding and can, rarely, flip a near-tie in the logits.
    On CPU the weights are loaded in float32 whatever the checkpoint holds; on CUDA in the
    checkpoint's own dtype. A prompt that leaves no room for ``max_new_tokens`` within the model's
    context is refused rather than truncated, because truncation would change the question.

    A folder holding ``model.onnx`` (``serving.onnx_model.MODEL_FILE``) answers through
    ``serving.onnx_model.OnnxCausalLM``, greedily, one prompt at a time and without padding (so
    ``batch_size`` changes nothing there), on ``cpu`` or ``cuda`` (``cuda:N`` is refused; ``cuda``
    needs the onnxruntime-gpu build). ONNX Runtime's rounding, and int8 weights, can make its
    answers differ from those of the transformers model the folder was exported from; no
    ``generation_config.json`` setting beyond the end-of-sequence token is applied there.
    """
    if not model_folder.is_dir():
        raise ValueError(f"model_folder: {model_folder} is not a folder")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be at least 1, not {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, not {batch_size}")
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device: must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompts: prompt {index} (counting from 0) is empty or not a string")
    if not prompts:
        return []
    from serving.onnx_model import MODEL_FILE

    if (model_folder / MODEL_FILE).is_file():
        return _onnx_answers(model_folder=model_folder, prompts=prompts, max_new_tokens=max_new_tokens, device=device)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was asked for, but torch sees no CUDA device")
    # Greedy decoding draws nothing at random; the seed covers whatever a model's code might.
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_folder, local_files_only=True, padding_side="left")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"model_folder: the tokenizer in {model_folder} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        model_folder, local_files_only=True, dtype=torch.float32 if device == "cpu" else "auto"
    )
    model.to(device)
    model.eval()
    positions = getattr(model.config, "max_position_embeddings", None)

    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        encoded = tokenizer(batch, return_tensors="pt", padding=True)
        width = encoded["input_ids"].shape[1]
        if positions is not None and width + max_new_tokens > positions:
            longest = start + max(range(len(batch)), key=lambda i: int(encoded["attention_mask"][i].sum()))
            raise ValueError(
                f"prompts: prompt {longest} (counting from 0) is {width} tokens long, which with "
                f"max_new_tokens={max_new_tokens} exceeds the model's {positions} positions"
            )
        encoded = encoded.to(device)
        with torch.inference_mode():
            # do_sample=False said explicitly: transformers 5 then stays quiet about sampling
            # settings (temperature, top_p) inherited from a checkpoint's generation_config.json.
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
            )
        answers.extend(tokenizer.batch_decode(output[:, width:], skip_special_tokens=True))
    return answers


def _onnx_answers(*, model_folder: Path, prompts: list[str], max_new_tokens: int, device: str) -> list[str]:
    """Greedy answers of the ONNX model in ``model_folder``, with ``generate_answers``' checks."""
    from serving.onnx_model import OnnxCausalLM

    if device not in ("cpu", "cuda"):
        raise ValueError(f"device: an ONNX model answers on 'cpu' or 'cuda', not {device!r}")
    model = OnnxCausalLM(model_folder, device=device)
    encoded = [model.encode(prompt) for prompt in prompts]
    for index, tokens in enumerate(encoded):
        if not tokens:
            raise ValueError(f"prompts: prompt {index} (counting from 0) is no token at all for the tokenizer")
        if len(tokens) + max_new_tokens > model.max_positions:
            raise ValueError(
                f"prompts: prompt {index} (counting from 0) is {len(tokens)} tokens long, which with "
                f"max_new_tokens={max_new_tokens} exceeds the model's {model.max_positions} positions"
            )
    return [model.decode(model.generate(tokens, max_new_tokens)) for tokens in encoded]
