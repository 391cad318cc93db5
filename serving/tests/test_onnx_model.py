"""ONNX Runtime serving on the tiny model: the export, greedy parity with transformers, and the
model server as a real process under a grant whose runtime is ``onnx``.

No database. The tiny GPT-2 is built and exported once for the module (the export takes 10-20 s
on two cores); the servers reuse ``test_server``'s process helper and bind free ports.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audits.ledger.keys import SignerKey
from serving.grants import folder_weights_digest
from serving.onnx_model import MODEL_FILE, OnnxCausalLM, OnnxModelError, export_onnx
from serving.tests.test_server import Server, statement

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

PROMPTS = [
    "the customer asked about the refund",
    "orders ship within two days and",
    "hello",
    "zzz 42 !? unseen words",
]
MAX_NEW_TOKENS = 20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def source(workdir: Path) -> Path:
    from registry.tiny_model import build_tiny_gpt2

    return build_tiny_gpt2(workdir / "model")


@pytest.fixture(scope="module")
def exported(workdir: Path, source: Path) -> Path:
    export_onnx(source, workdir / "onnx")
    return workdir / "onnx"


@pytest.fixture(scope="module")
def onnx_model(exported: Path) -> OnnxCausalLM:
    return OnnxCausalLM(exported)


@pytest.fixture(scope="module")
def transformers_model(source: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    return tokenizer, AutoModelForCausalLM.from_pretrained(source, local_files_only=True).eval()


def transformers_greedy(transformers_model: tuple[Any, Any], prompt: str, **options: Any) -> list[int]:
    """The new token ids of transformers' greedy ``generate``, as the model server calls it."""
    import torch

    tokenizer, model = transformers_model
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(
            **encoded, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id, **options
        )
    return [int(token) for token in output[0, encoded["input_ids"].shape[1] :]]


@pytest.fixture(scope="module")
def signer() -> SignerKey:
    return SignerKey.generate("test")


@pytest.fixture(scope="module")
def keys(workdir: Path, signer: SignerKey) -> Path:
    path = workdir / "verifier.keys"
    path.write_text(signer.verifier().encode() + "\n")
    return path


@pytest.fixture
def start(tmp_path: Path, keys: Path, signer: SignerKey) -> Iterator[Any]:
    """``start(statement, weights)``: a server with a blank guard pipeline, stopped after the test."""
    servers: list[Server] = []

    def _start(grant: dict[str, Any], weights: Path) -> Server:
        server = Server(tmp_path / f"server-{len(servers)}", grant, [signer], keys, weights, "--nlp-model", "blank")
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


# --- Export and generation, in process -------------------------------------------------------------


def test_the_export_is_a_folder_of_its_own_with_dynamic_axes(exported: Path) -> None:
    import onnx

    names = sorted(p.name for p in exported.iterdir())
    assert MODEL_FILE in names and "tokenizer.json" in names and "config.json" in names
    assert not any(name.endswith((".safetensors", ".bin")) for name in names)
    graph = onnx.load(exported / MODEL_FILE).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["logits"]
    for tensor in graph.input:
        assert all(dim.dim_param for dim in tensor.type.tensor_type.shape.dim)  # batch and sequence


@pytest.mark.parametrize("prompt", PROMPTS)
def test_onnx_greedy_output_equals_transformers(
    onnx_model: OnnxCausalLM, transformers_model: tuple[Any, Any], prompt: str
) -> None:
    expected = transformers_greedy(transformers_model, prompt)
    tokenizer = transformers_model[0]
    assert onnx_model.encode(prompt) == tokenizer(prompt)["input_ids"]
    assert onnx_model.generate(onnx_model.encode(prompt), MAX_NEW_TOKENS) == expected
    assert onnx_model.complete(prompt, MAX_NEW_TOKENS) == tokenizer.decode(expected, skip_special_tokens=True)


def test_generation_stops_at_the_end_of_sequence_token(
    exported: Path, transformers_model: tuple[Any, Any], tmp_path: Path
) -> None:
    """The tiny model's random weights never reach its real end token in a few steps, so the copy
    here names as its end token one that the greedy continuation reaches on the way."""
    prompt = PROMPTS[0]
    stop_token = transformers_greedy(transformers_model, prompt)[2]
    expected = transformers_greedy(transformers_model, prompt, eos_token_id=stop_token)
    assert expected[-1] == stop_token and len(expected) < MAX_NEW_TOKENS

    copy = shutil.copytree(exported, tmp_path / "onnx")
    generation = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": stop_token}))
    model = OnnxCausalLM(copy)
    assert model.generate(model.encode(prompt), MAX_NEW_TOKENS) == expected


def test_export_refuses_a_folder_that_is_not_a_model(tmp_path: Path, source: Path, exported: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a model")
    with pytest.raises(OnnxModelError, match=f"{notes} is not a loadable causal language model"):
        export_onnx(notes, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(OnnxModelError, match="it exists and is not an empty folder"):
        export_onnx(source, exported)
    with pytest.raises(OnnxModelError, match=f"{source} holds no model.onnx"):
        OnnxCausalLM(source)


# --- The model server, as a real process -----------------------------------------------------------


def test_a_server_under_an_onnx_grant_serves_the_onnx_completion(
    start: Any, exported: Path, onnx_model: OnnxCausalLM
) -> None:
    digest = folder_weights_digest(exported)
    server = start(statement(digest, runtime="onnx"), exported)
    assert server.wait_serving()["weights_digest"] == digest
    prompt = PROMPTS[1]
    status, body = server.complete(prompt, max_tokens=8)
    assert status == 200, body
    assert body["text"] == onnx_model.complete(prompt, 8)
    assert body["model_digest"] == digest and body["grant_id"] == server.grant["grant_id"]
    assert server.log_lines()[-1]["status"] == 200
    assert server.stop() == 0


def test_an_onnx_folder_under_another_digest_refuses(start: Any, source: Path, exported: Path) -> None:
    other = folder_weights_digest(source)  # the transformers folder the export came from
    code, reason = start(statement(other, runtime="onnx"), exported).refusal()
    assert code == 3
    assert "weights digest mismatch" in reason
    assert folder_weights_digest(exported) in reason and other in reason


def test_an_onnx_grant_for_a_folder_that_is_not_an_export_refuses(start: Any, source: Path) -> None:
    code, reason = start(statement(folder_weights_digest(source), runtime="onnx"), source).refusal()
    assert code == 3 and "cannot load the ONNX model" in reason and "holds no model.onnx" in reason
