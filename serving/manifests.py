"""Kubernetes manifests that carry a deployment grant, for KServe or vLLM, and their schema check.

Standard library, ``jsonschema``, PyYAML, ``rfc8785``, ``serving.grants`` and the ledger's keys
only: no Django import, so the ``verify-weights`` command below runs in an init container from the
project's image.

- ``render_kserve``: a ``serving.kserve.io/v1beta1`` InferenceService whose predictor is a custom
  container running the governed server (``python -m serving.server``), which verifies the grant
  against the weights KServe's storage initializer put in ``/mnt/models`` and refuses anything
  else (exit 3), and stops at the grant's expiry (exit 4); plus the grant Secret.
- ``render_vllm``: an ``apps/v1`` Deployment, a ``v1`` Service and the grant Secret. Two init
  containers run before vLLM: the storage initializer copies ``storage_uri`` into an ``emptyDir``,
  then ``python -m serving.manifests verify-weights`` checks the grant's signature, validity and
  weights digest against that folder. vLLM mounts the folder read-only, so the weights it loads are
  the weights that were hashed.

The grant travels verbatim in a Secret (key ``grant.note``, ``immutable``, named after the grant,
so a new grant is a new Secret and a rollout). The verifier keys do not travel with it: they come
from a ConfigMap (key ``verifier.keys``, default name ``governance-verifier-keys``) that the
platform's administrators create once per namespace, so whoever may write the grant Secret cannot
also replace the keys that check it. Both are projected into ``/etc/governance``.

Command line::

    python -m serving.manifests verify-weights --grant F --verifier-keys F --weights DIR

exits 0 and prints ``{"event": "verified", ...}`` when the grant's signature verifies
(``serving.grants.verify_grant``: known key, fields, validity period) and
``folder_weights_digest(DIR)`` is the grant's ``weights_digest``; otherwise it prints
``{"event": "refused", "reason": ...}`` and exits 3, as the governed server does.

Caveats:

- vLLM enforces none of the grant's request limits itself. ``--max-num-seqs`` is ``max_batch`` and
  ``--max-model-len`` is ``max_prompt_chars + max_tokens`` (a token holds at least one character
  for the usual tokenizers), which bounds but does not equal the grant's per-request limits; put a
  gateway in front to enforce ``max_tokens`` and ``max_prompt_chars`` exactly. vLLM runs no PII
  guard either, so ``render_vllm`` refuses a grant whose guard is not ``off``, nor does it mark
  completions as AI-generated, so it refuses a grant whose ``transparency`` says ``mark``.
- After the grant expires vLLM keeps running; its readiness probe compares the clock with
  ``expires_at``, so the pod leaves the Service's endpoints at expiry. Replace the Deployment with
  one for a fresh grant.
- The GPU type is matched through the node label ``nvidia.com/gpu.product`` (NVIDIA GPU Feature
  Discovery): the grant's ``gpu_type`` must be that label's value (``NVIDIA-H100-80GB-HBM3``) for
  the pods to schedule. The governed server (KServe path) also checks the device name itself.
- Storage credentials (S3 keys, a service account) are the platform's; nothing here renders them.
- The image defaults (``DEFAULT_VLLM_IMAGE``, ``DEFAULT_STORAGE_INITIALIZER_IMAGE``) are pins to
  review when upgrading, not tested against a cluster.

Schemas (``serving/schemas/``, JSON Schema 2020-12; each file's ``$comment`` says what was kept):

- ``serving.kserve.io-v1beta1-inferenceservice.json``: from kserve/kserve,
  ``config/crd/full/serving.kserve.io_inferenceservices.yaml`` at commit
  047112c8916ef527b7a4b4090effdb1cbc5be29c (controller-gen v0.16.2), version v1beta1
  ``openAPIV3Schema``.
- ``apps-v1-deployment.json``, ``v1-service.json``, ``v1-secret.json``: from
  yannh/kubernetes-json-schema, ``master-local/`` (the Kubernetes master OpenAPI as JSON Schema):
  ``deployment-apps-v1.json``, ``deploymentspec-apps-v1.json``, ``podspec-v1.json``,
  ``container.json``, ``service-v1.json``, ``servicespec-v1.json``, ``secret-v1.json`` and the
  definitions they reference in ``_definitions.json``.

All four are trimmed extracts: descriptions and ``x-kubernetes-*`` extensions dropped, the fields
rendered here kept with their types, formats, enums, patterns and required lists. Two additions are
not in the upstream documents: ``additionalProperties: false`` on the objects rendered here (the
API server's strict field validation, kubectl's default, rejects unknown fields the same way), and
the name and label patterns the API server enforces in code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import rfc8785
import yaml
from jsonschema import Draft202012Validator

from audits.ledger.keys import KeyFileError, VerifierKey, load_verifier_keys
from serving.grants import GrantError, check_statement, folder_weights_digest, parse_utc, verify_grant

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io-v1beta1-inferenceservice.json",
    ("apps/v1", "Deployment"): "apps-v1-deployment.json",
    ("v1", "Service"): "v1-service.json",
    ("v1", "Secret"): "v1-secret.json",
}

GOVERNANCE_DIR = "/etc/governance"
GRANT_KEY = "grant.note"
VERIFIER_KEYS_KEY = "verifier.keys"
GRANT_PATH = f"{GOVERNANCE_DIR}/{GRANT_KEY}"
VERIFIER_KEYS_PATH = f"{GOVERNANCE_DIR}/{VERIFIER_KEYS_KEY}"
MODEL_DIR = "/mnt/models"
DEFAULT_VERIFIER_KEYS_CONFIG_MAP = "governance-verifier-keys"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.10.1"
DEFAULT_STORAGE_INITIALIZER_IMAGE = "kserve/storage-initializer:v0.15.2"
KSERVE_CONTAINER = "kserve-container"  # the name KServe looks for STORAGE_URI on
KSERVE_PORT = 8080
# Inside a pod the server must listen on the pod's address; the Service and the network policy
# are what limit who reaches it.
POD_INTERFACES = "0.0.0.0"  # noqa: S104
SHM_DIR = "/dev/shm"  # noqa: S108  (a mount point for shared memory, not a temporary file)
VLLM_PORT = 8000
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
LABEL_PREFIX = "llmops-governance"
EXIT_REFUSED = 3
KSERVE_RUNTIMES = ("transformers", "onnx")  # what serving.server loads
VLLM_RUNTIMES = ("transformers",)  # vLLM loads transformers checkpoints, not ONNX exports

# KServe derives "<name>-predictor" and Knative revision names ("-00001") from the name, and both
# must stay DNS labels (63 characters).
MAX_NAME_LENGTH = 63 - len("-predictor-00001")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


class ManifestError(ValueError):
    """A manifest cannot be rendered: the message names the field at fault."""


class ManifestValidationError(ValueError):
    """A manifest breaks its schema; ``violations`` holds every ``(JSON path, message)``."""

    def __init__(self, title: str, violations: list[tuple[str, str]]) -> None:
        self.violations = violations
        lines = "\n".join(f"  {path}: {message}" for path, message in violations)
        super().__init__(f"{title}: {len(violations)} schema violation(s)\n{lines}")


# --- checks shared by both renderings -------------------------------------------------------------


def _check_grant(statement: dict[str, Any], grant_text: str, now: datetime | None) -> None:
    if not isinstance(statement, dict):
        raise ManifestError("statement: a grant statement is a JSON object")
    if not statement.get("weights_digest"):
        raise ManifestError("weights_digest: the statement has no weights digest; no weights can be granted")
    try:
        check_statement(statement)
    except GrantError as exc:
        raise ManifestError(f"statement: {exc}") from None
    moment = now if now is not None else datetime.now(UTC)
    if moment >= parse_utc(statement["expires_at"], "expires_at"):
        raise ManifestError(f"expires_at: the grant expired at {statement['expires_at']}")
    # The labels and limits come from ``statement``; the server checks ``grant_text``. They must
    # be one and the same grant.
    if not isinstance(grant_text, str) or not grant_text:
        raise ManifestError("grant_text: the signed grant is empty")
    body = grant_text.split("\n", 1)[0]
    if body != rfc8785.dumps(statement).decode("utf-8"):
        raise ManifestError("grant_text: the signed grant's statement is not the statement given")


def _check_names(name: str, namespace: str, storage_uri: str, image: str) -> None:
    if not isinstance(name, str) or not _DNS1035_LABEL.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ManifestError(
            f"name: {name!r} is not a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
            "(lower-case letters, digits and '-', starting with a letter, ending with a letter or digit)"
        )
    if not isinstance(namespace, str) or not _DNS1123_LABEL.fullmatch(namespace) or len(namespace) > 63:
        raise ManifestError(f"namespace: {namespace!r} is not a DNS-1123 label")
    if not isinstance(storage_uri, str) or "://" not in storage_uri or any(ch.isspace() for ch in storage_uri):
        raise ManifestError(f"storage_uri: {storage_uri!r} is not a URI (s3://, gs://, hf://, https://, ...)")
    if not isinstance(image, str) or not image or any(ch.isspace() for ch in image):
        raise ManifestError(f"image: {image!r} is not a container image reference")


def _gpu_type_label(target: dict[str, Any]) -> str | None:
    gpu_type = target["gpu_type"]
    if target["gpu_count"] == 0 or not gpu_type:
        return None
    if len(gpu_type) > 63 or not _LABEL_VALUE.fullmatch(gpu_type):
        raise ManifestError(
            f"target.gpu_type: {gpu_type!r} cannot be matched against the node label {GPU_PRODUCT_LABEL} "
            "(a label value: letters, digits, '-', '_', '.', at most 63)"
        )
    return gpu_type


# --- metadata ----------------------------------------------------------------------------------


def _labels(statement: dict[str, Any], name: str) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": LABEL_PREFIX,
    }
    for key, value in (
        ("grant-id", statement["grant_id"]),
        ("deployment", statement["deployment"]),
        ("environment", statement["environment"]),
    ):
        text = str(value)
        if len(text) <= 63 and _LABEL_VALUE.fullmatch(text):  # otherwise the annotation alone carries it
            labels[f"{LABEL_PREFIX}/{key}"] = text
    return labels


def _annotations(statement: dict[str, Any]) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}/grant-id": str(statement["grant_id"]),
        f"{LABEL_PREFIX}/deployment": str(statement["deployment"]),
        f"{LABEL_PREFIX}/environment": str(statement["environment"]),
        f"{LABEL_PREFIX}/model-version": str(statement["model_version"]),
        f"{LABEL_PREFIX}/weights-digest": statement["weights_digest"],
        f"{LABEL_PREFIX}/runtime": statement["runtime"],
        f"{LABEL_PREFIX}/issued-at": statement["issued_at"],
        f"{LABEL_PREFIX}/expires-at": statement["expires_at"],
    }


def _metadata(statement: dict[str, Any], name: str, namespace: str, *, instance: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": _labels(statement, instance or name),
        "annotations": _annotations(statement),
    }


def _secret_name(statement: dict[str, Any], name: str) -> str:
    # One Secret per grant: the Secret is immutable, and a new grant changes the pod template.
    return f"{name}-grant-{hashlib.sha256(str(statement['grant_id']).encode()).hexdigest()[:10]}"


def _grant_secret(statement: dict[str, Any], grant_text: str, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(statement, _secret_name(statement, name), namespace, instance=name),
        "type": "Opaque",
        "immutable": True,
        "stringData": {GRANT_KEY: grant_text},
    }


def _governance_volume(statement: dict[str, Any], name: str, verifier_keys_config_map: str) -> dict[str, Any]:
    return {
        "name": "governance",
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"secret": {"name": _secret_name(statement, name), "items": [{"key": GRANT_KEY, "path": GRANT_KEY}]}},
                {
                    "configMap": {
                        "name": verifier_keys_config_map,
                        "items": [{"key": VERIFIER_KEYS_KEY, "path": VERIFIER_KEYS_KEY}],
                    }
                },
            ],
        },
    }


def _gpu_scheduling(target: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], list[dict[str, Any]]]:
    """Container resources, node selector and tolerations for the grant's GPU target."""
    if target["gpu_count"] == 0:
        return {}, {}, []
    resources = {"limits": {GPU_RESOURCE: target["gpu_count"]}}
    gpu_type = _gpu_type_label(target)
    node_selector = {GPU_PRODUCT_LABEL: gpu_type} if gpu_type else {}
    tolerations = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return resources, node_selector, tolerations


# --- KServe --------------------------------------------------------------------------------------


PLATFORMS = ("kserve", "vllm")


def platform_refusal(
    platform: str, runtime: str, target: dict[str, Any], guard: dict[str, Any],
    *, transparency: dict[str, Any] | None = None,
) -> str | None:  # fmt: skip
    """Why ``platform`` cannot serve a deployment so configured (``field: reason``), or ``None``.
    The service asks this when a deployment is requested, long before a grant exists."""
    if platform not in PLATFORMS:
        return f"platform: one of {', '.join(PLATFORMS)}, not {platform!r}"
    if platform == "kserve":
        if runtime not in KSERVE_RUNTIMES:
            return f"runtime: the governed server serves {', '.join(KSERVE_RUNTIMES)}, not {runtime!r}"
        return None
    if runtime not in VLLM_RUNTIMES:
        return f"runtime: vLLM serves transformers checkpoints, not {runtime!r}"
    if guard.get("mode") != "off":
        return (
            f"guard.mode: the deployment requires the PII guard ({guard.get('mode')}); vLLM runs none, "
            "serve it with KServe (the governed server runs the guard) or deploy without a guard"
        )
    if transparency is not None and transparency.get("mark"):
        return (
            "transparency.mark: vLLM does not mark completions as AI-generated; serve it with KServe "
            "(the governed server marks them) or, in staging, deploy with marking off"
        )
    if not target.get("gpu_count"):
        return "target.gpu_count: vLLM serves on GPUs; a deployment for 0 GPUs cannot run there"
    return None


def render_kserve(
    statement: dict[str, Any],
    grant_text: str,
    *,
    name: str,
    namespace: str,
    storage_uri: str,
    image: str,
    verifier_keys_config_map: str = DEFAULT_VERIFIER_KEYS_CONFIG_MAP,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The grant Secret and an InferenceService whose predictor runs the governed server.

    ``image`` is this project's image (it must hold ``serving.server``). KServe's storage
    initializer downloads ``storage_uri`` to ``/mnt/models`` (the ``STORAGE_URI`` variable of a
    custom container); the server refuses those weights unless they are the grant's. Replicas are
    fixed at the grant's count (min = max), ``containerConcurrency`` is ``max_batch``.

    Raises ``ManifestError`` (a ``ValueError``) naming the field: an incomplete or expired
    statement, a grant text that is not the statement's, an invalid name, namespace, URI or GPU
    type, and a runtime the governed server does not load (it loads ``transformers`` and ``onnx``).
    """
    _check_grant(statement, grant_text, now)
    _check_names(name, namespace, storage_uri, image)
    refusal = platform_refusal("kserve", statement["runtime"], statement["target"], statement["guard"])
    if refusal:
        raise ManifestError(refusal)
    target = statement["target"]
    resources, node_selector, tolerations = _gpu_scheduling(target)
    device = "cuda" if target["gpu_count"] > 0 else "cpu"
    server_command = [
        "python", "-m", "serving.server",
        "--grant", GRANT_PATH, "--verifier-keys", VERIFIER_KEYS_PATH, "--weights", MODEL_DIR,
        "--host", POD_INTERFACES, "--port", str(KSERVE_PORT), "--device", device,
        # Client credentials reach a local server only (a file the service rewrites): on KServe the
        # platform's ingress authenticates callers (docs/deployments.md).
        "--unauthenticated-callers-unsafe",
    ]  # fmt: skip
    container: dict[str, Any] = {
        "name": KSERVE_CONTAINER,
        "image": image,
        "command": server_command,
        "env": [
            {"name": "STORAGE_URI", "value": storage_uri},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        ],
        "ports": [{"containerPort": KSERVE_PORT, "protocol": "TCP"}],
        "volumeMounts": [{"name": "governance", "mountPath": GOVERNANCE_DIR, "readOnly": True}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources:
        container["resources"] = resources
    predictor: dict[str, Any] = {
        "labels": _labels(statement, name),
        "annotations": _annotations(statement),
        "minReplicas": target["replicas"],
        "maxReplicas": target["replicas"],
        "containerConcurrency": target["max_batch"],
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [_governance_volume(statement, name, verifier_keys_config_map)],
    }
    if node_selector:
        predictor["nodeSelector"] = node_selector
    if tolerations:
        predictor["tolerations"] = tolerations
    service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(statement, name, namespace),
        "spec": {"predictor": predictor},
    }
    return [_grant_secret(statement, grant_text, name, namespace), service]


# --- vLLM ----------------------------------------------------------------------------------------


def _expiry_probe(statement: dict[str, Any]) -> dict[str, Any]:
    """Ready while vLLM answers /health and the grant has not expired."""
    expires = int(parse_utc(statement["expires_at"], "expires_at").timestamp())
    check = (
        "import sys, time, urllib.request\n"
        f"if time.time() >= {expires}: sys.exit('grant expired at {statement['expires_at']}')\n"
        f"urllib.request.urlopen('http://127.0.0.1:{VLLM_PORT}/health', timeout=3)\n"
    )
    return {"exec": {"command": ["python3", "-c", check]}, "periodSeconds": 10, "timeoutSeconds": 5}


def render_vllm(
    statement: dict[str, Any],
    grant_text: str,
    *,
    name: str,
    namespace: str,
    storage_uri: str,
    image: str,
    vllm_image: str = DEFAULT_VLLM_IMAGE,
    storage_initializer_image: str = DEFAULT_STORAGE_INITIALIZER_IMAGE,
    verifier_keys_config_map: str = DEFAULT_VERIFIER_KEYS_CONFIG_MAP,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The grant Secret, a Deployment running vLLM behind a grant check, and its Service.

    ``image`` is this project's image: it runs the ``verify-weights`` init container. vLLM
    (``vllm_image``) serves ``/mnt/models`` only after that check passed, from a read-only mount.

    Raises ``ManifestError`` (a ``ValueError``) naming the field, as ``render_kserve`` does, and
    also for the ``onnx`` runtime (vLLM serves transformers checkpoints), a guard other than
    ``off`` (vLLM has no PII guard), a grant whose ``transparency`` marks output (vLLM adds no
    ``ai_generated`` metadata or header; a grant without the member, from before it existed,
    renders as before) and a target without GPUs (the vLLM image needs CUDA).
    """
    _check_grant(statement, grant_text, now)
    _check_names(name, namespace, storage_uri, image)
    for field, value in (("vllm_image", vllm_image), ("storage_initializer_image", storage_initializer_image)):
        if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
            raise ManifestError(f"{field}: {value!r} is not a container image reference")
    refusal = platform_refusal(
        "vllm", statement["runtime"], statement["target"], statement["guard"],
        transparency=statement.get("transparency"),
    )  # fmt: skip
    if refusal:
        raise ManifestError(refusal)
    target = statement["target"]
    resources, node_selector, tolerations = _gpu_scheduling(target)
    labels = _labels(statement, name)
    selector = {"app.kubernetes.io/instance": name}
    model_mount = {"name": "models", "mountPath": MODEL_DIR}
    governance_mount = {"name": "governance", "mountPath": GOVERNANCE_DIR, "readOnly": True}
    fetch = {
        "name": "storage-initializer",
        "image": storage_initializer_image,
        "args": [storage_uri, MODEL_DIR],
        "volumeMounts": [model_mount],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    verify_command = [
        "python", "-m", "serving.manifests", "verify-weights",
        "--grant", GRANT_PATH, "--verifier-keys", VERIFIER_KEYS_PATH, "--weights", MODEL_DIR,
    ]  # fmt: skip
    verify = {
        "name": "verify-grant",
        "image": image,
        "command": verify_command,
        "volumeMounts": [{**model_mount, "readOnly": True}, governance_mount],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    command = [
        "vllm", "serve", MODEL_DIR,
        "--host", POD_INTERFACES,
        "--port", str(VLLM_PORT),
        "--served-model-name", str(statement["deployment"]),
        "--max-num-seqs", str(target["max_batch"]),
        "--max-model-len", str(target["max_prompt_chars"] + target["max_tokens"]),
        "--tensor-parallel-size", str(target["gpu_count"]),
    ]  # fmt: skip
    server: dict[str, Any] = {
        "name": "vllm",
        "image": vllm_image,
        "command": command,
        "env": [
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        ],
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "volumeMounts": [{**model_mount, "readOnly": True}, {"name": "shm", "mountPath": SHM_DIR}],
        "readinessProbe": _expiry_probe(statement),
        "resources": resources,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "initContainers": [fetch, verify],
        "containers": [server],
        "volumes": [
            {"name": "models", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},  # tensor parallelism shares memory
            _governance_volume(statement, name, verifier_keys_config_map),
        ],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(statement, name, namespace),
        "spec": {
            "replicas": target["replicas"],
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels, "annotations": _annotations(statement)}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(statement, name, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [_grant_secret(statement, grant_text, name, namespace), deployment, service]


# --- schema check and YAML -------------------------------------------------------------------------


@cache
def _validator(filename: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / filename).read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def _json_path(parts: Iterable[Any]) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate(manifest: dict[str, Any]) -> None:
    """Check ``manifest`` against the schema of its apiVersion and kind in ``serving/schemas/``.

    Raises ``ManifestValidationError`` listing every violation with its JSON path
    (``$.spec.template.spec.containers[0].resources``), and for a kind with no stored schema.
    """
    if not isinstance(manifest, dict):
        raise ManifestValidationError("manifest", [("$", "a manifest is a JSON object")])
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    filename = SCHEMAS.get(key)
    if filename is None:
        known = ", ".join(f"{api} {kind}" for api, kind in SCHEMAS)
        raise ManifestValidationError(
            "manifest", [("$", f"no schema for apiVersion {key[0]!r} kind {key[1]!r} (known: {known})")]
        )
    errors = sorted(
        _validator(filename).iter_errors(manifest), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    if errors:
        name = (manifest.get("metadata") or {}).get("name") if isinstance(manifest.get("metadata"), dict) else None
        title = f"{key[0]} {key[1]} {name or '(unnamed)'}"
        raise ManifestValidationError(title, [(_json_path(e.absolute_path), e.message) for e in errors])


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    # Multi-line text (the grant) as a literal block, so the YAML shows it as it is signed.
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(manifests: Sequence[dict[str, Any]]) -> str:
    """``manifests`` as one multi-document YAML stream (``kubectl apply -f -``), keys in order."""
    return yaml.dump_all(list(manifests), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 16)


# --- verify-weights -------------------------------------------------------------------------------


class _Refused(Exception):
    pass


def _read_verifier_keys(path: Path) -> list[VerifierKey]:
    """The verifier keys file as ``serving.server`` reads it: one key a line, ``#`` comments."""
    try:
        return load_verifier_keys(path)
    except KeyFileError as exc:
        raise _Refused(str(exc)) from None


def verify_weights(grant: Path, verifier_keys: Path, weights: Path) -> dict[str, Any]:
    """The grant's statement, once it verifies and ``weights`` is the folder it covers."""
    keys = _read_verifier_keys(verifier_keys)
    try:
        text = grant.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Refused(f"cannot read the grant {grant}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        statement = verify_grant(text, keys)
    except GrantError as exc:
        raise _Refused(str(exc)) from None
    try:
        digest = folder_weights_digest(weights)
    except (OSError, ValueError) as exc:
        raise _Refused(f"cannot hash the weights: {exc}") from None
    if digest != statement["weights_digest"]:
        raise _Refused(
            f"the weights in {weights} ({digest}) are not the weights the grant covers ({statement['weights_digest']})"
        )
    return statement


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.manifests", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify-weights", help="exit 0 only if the grant covers the weights folder")
    check.add_argument("--grant", type=Path, required=True, help="the signed grant (a C2SP signed note)")
    check.add_argument("--verifier-keys", type=Path, required=True, help="verifier keys, one per line")
    check.add_argument("--weights", type=Path, required=True, help="the downloaded model folder")
    args = parser.parse_args(argv)
    try:
        statement = verify_weights(args.grant, args.verifier_keys, args.weights)
    except _Refused as exc:
        print(json.dumps({"event": "refused", "reason": str(exc)}), flush=True)
        return EXIT_REFUSED
    event = {
        "event": "verified",
        "grant_id": statement["grant_id"],
        "deployment": statement["deployment"],
        "environment": statement["environment"],
        "weights_digest": statement["weights_digest"],
        "expires_at": statement["expires_at"],
    }
    print(json.dumps(event), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
