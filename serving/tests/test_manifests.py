"""Manifests for KServe and vLLM: rendering, refusals, schema checks, and the verify-weights command.

No database: statements are built here and signed with a key generated for the module; the
weights are a few small files written by the tests (the command only hashes them).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from audits.ledger.keys import SignerKey
from serving.grants import folder_weights_digest, sign_grant, utc_timestamp
from serving.manifests import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GRANT_KEY,
    ManifestError,
    ManifestValidationError,
    dump_yaml,
    render_kserve,
    render_vllm,
    validate,
)

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
GPU_TARGET = {
    "gpu_type": "NVIDIA-H100-80GB-HBM3", "gpu_count": 2, "replicas": 3, "max_batch": 8, "max_tokens": 256,
    "max_prompt_chars": 4000,
}  # fmt: skip
PLACEMENT = {"name": "assistant", "namespace": "ml-serving", "storage_uri": "s3://models/assistant/7"}
IMAGE = "registry.example/llmops-governance:1.4.0"


def statement(digest: str = DIGEST, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "grant_id": str(uuid.uuid4()), "deployment": "assistant", "environment": "production", "model_version": 7,
        "weights_digest": digest, "runtime": "transformers", "target": dict(GPU_TARGET),
        "guard": {"mode": "off", "entities": []},
        "issued_at": utc_timestamp(now - timedelta(minutes=1)), "expires_at": utc_timestamp(now + timedelta(days=7)),
    }  # fmt: skip
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def signer() -> SignerKey:
    return SignerKey.generate("test")


def grant(signer: SignerKey, **overrides: Any) -> tuple[dict[str, Any], str]:
    body = statement(**overrides)
    return body, sign_grant(body, [signer])


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


# --- rendering ------------------------------------------------------------------------------------


def test_kserve_rendering_validates_and_carries_the_grant(signer: SignerKey) -> None:
    body, text = grant(signer)
    manifests = render_kserve(body, text, image=IMAGE, **PLACEMENT)
    for manifest in manifests:
        validate(manifest)
    secret, isvc = by_kind(manifests, "Secret"), by_kind(manifests, "InferenceService")
    assert secret["stringData"][GRANT_KEY] == text
    assert secret["immutable"] is True
    assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == "assistant"

    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["command"][:3] == ["python", "-m", "serving.server"]
    command = " ".join(container["command"])
    assert "--grant /etc/governance/grant.note --verifier-keys /etc/governance/verifier.keys" in command
    assert "--weights /mnt/models" in command and "--device cuda" in command
    assert {"name": "STORAGE_URI", "value": PLACEMENT["storage_uri"]} in container["env"]
    assert container["resources"]["limits"][GPU_RESOURCE] == 2
    assert predictor["nodeSelector"] == {GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 3
    assert predictor["containerConcurrency"] == 8

    (volume,) = predictor["volumes"]
    assert volume["projected"]["sources"][0]["secret"]["name"] == secret["metadata"]["name"]
    assert container["volumeMounts"] == [{"name": "governance", "mountPath": "/etc/governance", "readOnly": True}]
    annotations = isvc["metadata"]["annotations"]
    assert annotations["llmops-governance/grant-id"] == body["grant_id"]
    assert annotations["llmops-governance/weights-digest"] == DIGEST
    assert annotations["llmops-governance/deployment"] == "assistant"
    assert annotations["llmops-governance/environment"] == "production"
    assert annotations["llmops-governance/expires-at"] == body["expires_at"]
    assert isvc["metadata"]["labels"]["llmops-governance/grant-id"] == body["grant_id"]


def test_kserve_without_gpus_renders_no_gpu_limit(signer: SignerKey) -> None:
    body, text = grant(signer, target={**GPU_TARGET, "gpu_count": 0, "gpu_type": ""})
    manifests = render_kserve(body, text, image=IMAGE, **PLACEMENT)
    for manifest in manifests:
        validate(manifest)
    predictor = by_kind(manifests, "InferenceService")["spec"]["predictor"]
    assert "resources" not in predictor["containers"][0]
    assert "nodeSelector" not in predictor and "tolerations" not in predictor
    assert "--device cpu" in " ".join(predictor["containers"][0]["command"])


def test_vllm_rendering_validates_and_verifies_before_serving(signer: SignerKey) -> None:
    body, text = grant(signer)
    manifests = render_vllm(body, text, image=IMAGE, **PLACEMENT)
    assert [m["kind"] for m in manifests] == ["Secret", "Deployment", "Service"]
    for manifest in manifests:
        validate(manifest)
    assert by_kind(manifests, "Secret")["stringData"][GRANT_KEY] == text

    deployment = by_kind(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    fetch, verify = pod["initContainers"]
    assert fetch["args"] == [PLACEMENT["storage_uri"], "/mnt/models"]
    assert verify["image"] == IMAGE
    assert verify["command"] == [
        "python", "-m", "serving.manifests", "verify-weights", "--grant", "/etc/governance/grant.note",
        "--verifier-keys", "/etc/governance/verifier.keys", "--weights", "/mnt/models",
    ]  # fmt: skip
    (server,) = pod["containers"]
    assert server["command"][:3] == ["vllm", "serve", "/mnt/models"]
    flags = dict(zip(server["command"][3::2], server["command"][4::2], strict=True))
    assert flags["--max-num-seqs"] == "8"
    assert flags["--max-model-len"] == str(4000 + 256)
    assert flags["--tensor-parallel-size"] == "2"
    assert server["resources"]["limits"][GPU_RESOURCE] == 2
    assert {"name": "models", "mountPath": "/mnt/models", "readOnly": True} in server["volumeMounts"]
    assert pod["nodeSelector"] == {GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}
    # The readiness probe drops the pod from the Service once the grant has expired.
    assert (
        str(int(datetime.fromisoformat(body["expires_at"]).timestamp()))
        in server["readinessProbe"]["exec"]["command"][2]
    )

    service = by_kind(manifests, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["metadata"]["annotations"]["llmops-governance/weights-digest"] == DIGEST


def test_dump_yaml_round_trips_the_grant_verbatim(signer: SignerKey) -> None:
    body, text = grant(signer)
    manifests = render_vllm(body, text, image=IMAGE, **PLACEMENT)
    dumped = dump_yaml(manifests)
    assert dumped.count("\n---\n") == 2
    assert "grant.note: |" in dumped
    assert list(yaml.safe_load_all(dumped)) == manifests
    assert next(yaml.safe_load_all(dumped))["stringData"][GRANT_KEY] == text


# --- refusals -----------------------------------------------------------------------------------


def test_vllm_refuses_onnx_which_the_governed_server_on_kserve_serves(signer: SignerKey) -> None:
    body, text = grant(signer, runtime="onnx")
    with pytest.raises(ManifestError, match=r"^runtime: vLLM serves transformers"):
        render_vllm(body, text, image=IMAGE, **PLACEMENT)
    for manifest in render_kserve(body, text, image=IMAGE, **PLACEMENT):
        validate(manifest)


def test_vllm_refuses_a_grant_that_requires_the_guard(signer: SignerKey) -> None:
    body, text = grant(signer, guard={"mode": "redact", "entities": ["EMAIL_ADDRESS"]})
    with pytest.raises(ManifestError, match=r"^guard\.mode: "):
        render_vllm(body, text, image=IMAGE, **PLACEMENT)
    render_kserve(body, text, image=IMAGE, **PLACEMENT)  # the governed server runs the guard


def test_refuses_an_expired_statement(signer: SignerKey) -> None:
    body, text = grant(signer)
    later = datetime.fromisoformat(body["expires_at"]) + timedelta(seconds=1)
    for render in (render_kserve, render_vllm):
        with pytest.raises(ManifestError, match=r"^expires_at: the grant expired at"):
            render(body, text, image=IMAGE, now=later, **PLACEMENT)


@pytest.mark.parametrize("name", ["Assistant", "1assistant", "assist_ant", "assistant-", "", "a" * 48])
def test_refuses_a_bad_name(signer: SignerKey, name: str) -> None:
    body, text = grant(signer)
    for render in (render_kserve, render_vllm):
        with pytest.raises(ManifestError, match=r"^name: .* is not a DNS-1035 label"):
            render(body, text, image=IMAGE, **{**PLACEMENT, "name": name})


def test_refuses_a_missing_weights_digest(signer: SignerKey) -> None:
    body, text = grant(signer)
    del body["weights_digest"]
    with pytest.raises(ManifestError, match=r"^weights_digest: "):
        render_kserve(body, text, image=IMAGE, **PLACEMENT)


def test_refuses_a_grant_text_of_another_statement(signer: SignerKey) -> None:
    body, _ = grant(signer)
    _, other = grant(signer)
    with pytest.raises(ManifestError, match=r"^grant_text: "):
        render_kserve(body, other, image=IMAGE, **PLACEMENT)


def test_refuses_a_gpu_type_no_node_label_can_hold(signer: SignerKey) -> None:
    body, text = grant(signer, target={**GPU_TARGET, "gpu_type": "H100 80GB"})
    with pytest.raises(ManifestError, match=r"^target\.gpu_type: "):
        render_kserve(body, text, image=IMAGE, **PLACEMENT)


# --- schema check -------------------------------------------------------------------------------


def violations(manifest: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ManifestValidationError) as caught:
        validate(manifest)
    assert all(path in str(caught.value) for path, _ in caught.value.violations)
    return dict(caught.value.violations)


def test_validate_names_the_path_of_every_violation(signer: SignerKey) -> None:
    body, text = grant(signer)
    deployment = copy.deepcopy(by_kind(render_vllm(body, text, image=IMAGE, **PLACEMENT), "Deployment"))
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["ports"][0]["containerPort"] = "8000"  # wrong type
    del pod["initContainers"][1]["name"]  # missing required field
    pod["containers"][0]["resource"] = {}  # unknown field, a typo of resources
    found = violations(deployment)
    assert set(found) == {
        "$.spec.template.spec.containers[0].ports[0].containerPort",
        "$.spec.template.spec.initContainers[1]",
        "$.spec.template.spec.containers[0]",
    }
    assert "'8000' is not of type 'integer'" in found["$.spec.template.spec.containers[0].ports[0].containerPort"]
    assert "'name' is a required property" in found["$.spec.template.spec.initContainers[1]"]
    assert "'resource' was unexpected" in found["$.spec.template.spec.containers[0]"]


def test_validate_checks_the_inference_service(signer: SignerKey) -> None:
    body, text = grant(signer)
    isvc = copy.deepcopy(by_kind(render_kserve(body, text, image=IMAGE, **PLACEMENT), "InferenceService"))
    isvc["spec"]["predictor"]["minReplicas"] = 1.5
    isvc["spec"]["predictor"]["containers"][0]["resources"]["limits"][GPU_RESOURCE] = "two"
    isvc["metadata"]["labels"]["llmops-governance/expires-at"] = body["expires_at"]  # ':' is no label value
    found = violations(isvc)
    assert "$.spec.predictor.minReplicas" in found
    assert "$.spec.predictor.containers[0].resources.limits.nvidia.com/gpu" in found
    assert "$.metadata.labels.llmops-governance/expires-at" in found

    del isvc["spec"]["predictor"]
    assert "'predictor' is a required property" in violations(isvc)["$.spec"]


def test_validate_refuses_an_unknown_kind() -> None:
    found = violations({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    assert "no schema for apiVersion 'v1' kind 'Pod'" in found["$"]


def test_validate_checks_secret_and_service(signer: SignerKey) -> None:
    body, text = grant(signer)
    secret, _, service = copy.deepcopy(render_vllm(body, text, image=IMAGE, **PLACEMENT))
    secret["stringData"]["bad/key"] = "x"
    assert "$.stringData" in violations(secret)
    del service["spec"]["ports"][0]["port"]
    assert "'port' is a required property" in violations(service)["$.spec.ports[0]"]


# --- verify-weights, as the init container runs it ----------------------------------------------


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "gpt2"}\n')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "tokenizer" / "vocab.json").write_text('{"a": 0}\n')
    return folder


def verify(tmp_path: Path, signer: SignerKey, grant_text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    keys = tmp_path / "verifier.keys"
    keys.write_text(signer.verifier().encode() + "\n")
    note = tmp_path / "grant.note"
    note.write_text(grant_text, encoding="utf-8")
    command = [
        sys.executable, "-m", "serving.manifests", "verify-weights",
        "--grant", str(note), "--verifier-keys", str(keys), "--weights", str(folder),
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_verify_weights_accepts_the_granted_folder(tmp_path: Path, signer: SignerKey, weights: Path) -> None:
    body, text = grant(signer, digest=folder_weights_digest(weights))
    done = verify(tmp_path, signer, text, weights)
    assert done.returncode == 0, done.stdout + done.stderr
    event = json.loads(done.stdout)
    assert event["event"] == "verified"
    assert event["grant_id"] == body["grant_id"]
    assert event["weights_digest"] == body["weights_digest"]


def test_verify_weights_refuses_a_changed_byte(tmp_path: Path, signer: SignerKey, weights: Path) -> None:
    _, text = grant(signer, digest=folder_weights_digest(weights))
    blob = weights / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0x01
    blob.write_bytes(bytes(data))
    done = verify(tmp_path, signer, text, weights)
    assert done.returncode == 3
    event = json.loads(done.stdout)
    assert event["event"] == "refused"
    assert "are not the weights the grant covers" in event["reason"]


def test_verify_weights_refuses_a_grant_by_an_unknown_key(tmp_path: Path, signer: SignerKey, weights: Path) -> None:
    _, text = grant(SignerKey.generate("someone-else"), digest=folder_weights_digest(weights))
    done = verify(tmp_path, signer, text, weights)
    assert done.returncode == 3
    assert "no signature by a known key" in json.loads(done.stdout)["reason"]
