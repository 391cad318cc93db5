"""Marking of AI-generated output (EU AI Act Art. 50): the setting on a deployment request, its
digest and ledger entry, the signed grant that carries it, and the real model server marking
every completion exactly as its grant says (metadata and headers), on the tiny model.

The servers are real processes (``serving.tests.test_server.Server``), started once for the
module each, with the patterns-only guard (``--nlp-model blank``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from audits.ledger.keys import SignerKey, load_signer_keys
from audits.ledger.models import Entry
from common.errors import DomainError
from common.testing import admin_login
from serving.grants import DEFAULT_TRANSPARENCY, GrantError, folder_weights_digest, sign_grant, verify_grant
from serving.models import Deployment
from serving.services import deployment_digest
from serving.tests import deploying
from serving.tests.test_server import PII_PROMPT, Server, statement

SAYS = "Written by the support assistant, an AI system."
MARKED = {"mark": True, "header": True, "disclosure": SAYS}
NO_HEADER = {"mark": True, "header": False, "disclosure": SAYS}
UNMARKED = {"mark": False, "header": False, "disclosure": SAYS}
PROMPTS = ["the refund", "where is my parcel", PII_PROMPT, "cancel the order", "the invoice", "thanks"]


# --- the real server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("transparency")


@pytest.fixture(scope="module")
def weights(workdir: Path) -> Path:
    from registry.tiny_model import build_tiny_gpt2

    return build_tiny_gpt2(workdir / "model")


@pytest.fixture(scope="module")
def signer() -> SignerKey:
    return SignerKey.generate("test")


@pytest.fixture(scope="module")
def serve(workdir: Path, weights: Path, signer: SignerKey) -> Iterator[Any]:
    """``serve(name, **grant overrides)``: a serving server on the tiny model, stopped with the module."""
    keys = workdir / "verifier.keys"
    keys.write_text(signer.verifier().encode() + "\n")
    digest = folder_weights_digest(weights)
    servers: list[Server] = []

    def _serve(name: str, **overrides: Any) -> Server:
        grant = statement(digest, deployment=41, **overrides)
        server = Server(workdir / name, grant, [signer], keys, weights, "--nlp-model", "blank")
        servers.append(server)
        server.wait_serving()
        return server

    yield _serve
    for server in servers:
        server.stop()


def post(server: Server, payload: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and body of one completion request (urllib, as a plain client calls)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/completions", data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {server.credential}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def expected_marking(grant: dict[str, Any], transparency: dict[str, Any]) -> dict[str, Any]:
    return {
        "generated": True,
        "by": {
            "deployment": 41, "environment": "staging", "model_version": 7,
            "model_weights": grant["weights_digest"], "grant_id": grant["grant_id"],
        },
        "methods": ["metadata", "header"] if transparency["header"] else ["metadata"],
        "watermark": "none",
        "statement": transparency["disclosure"],
    }  # fmt: skip


def test_every_completion_of_a_batch_is_marked_with_metadata_and_headers(serve: Any) -> None:
    server = serve(
        "marked", transparency=MARKED, guard={"mode": "redact", "entities": ["EMAIL_ADDRESS", "CREDIT_CARD"]}
    )
    with ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:  # a batch of callers at once
        answers = list(pool.map(lambda prompt: post(server, {"prompt": prompt, "max_tokens": 4}), PROMPTS))
    marking = expected_marking(server.grant, MARKED)
    for status, headers, body in answers:
        assert status == 200, body
        assert body["ai_generated"] == marking
        assert headers["AI-Generated"] == "true"
        assert headers["X-AI-Generated-By"] == f"deployment=41; model-version=7; grant={server.grant['grant_id']}"
    redacted = answers[PROMPTS.index(PII_PROMPT)][2]
    assert redacted["guard"]["prompt"] == "redacted"  # the redacted answer is marked like the others
    status, health = server.call("/healthz")
    assert status == 200 and health["transparency"] == MARKED

    # Answers without generated text carry neither the metadata nor the header.
    status, headers, body = post(server, {"prompt": "", "max_tokens": 4})
    assert status == 400 and "ai_generated" not in body
    assert "AI-Generated" not in headers and "X-AI-Generated-By" not in headers
    status, headers, body = post(server, {"prompt": "hi", "max_tokens": 4, "stream": True})
    assert status == 400 and body["error"]["code"] == "unknown_field" and "AI-Generated" not in headers


def test_without_the_header_the_metadata_still_marks_and_a_block_carries_neither(serve: Any) -> None:
    server = serve("no-header", transparency=NO_HEADER, guard={"mode": "block", "entities": ["EMAIL_ADDRESS"]})
    status, headers, body = post(server, {"prompt": "the refund", "max_tokens": 4})
    assert status == 200, body
    assert body["ai_generated"] == expected_marking(server.grant, NO_HEADER)
    assert "AI-Generated" not in headers and "X-AI-Generated-By" not in headers

    status, headers, body = post(server, {"prompt": "mail ana@example.org", "max_tokens": 4})
    assert status == 422 and body["error"]["code"] == "blocked_by_guard"
    assert "ai_generated" not in body and "AI-Generated" not in headers


def test_a_grant_that_says_unmarked_serves_unmarked_and_one_without_the_member_is_marked(serve: Any) -> None:
    unmarked = serve("unmarked", transparency=UNMARKED)
    status, headers, body = post(unmarked, {"prompt": "the refund", "max_tokens": 4})
    assert status == 200 and "ai_generated" not in body and "AI-Generated" not in headers
    assert unmarked.call("/healthz")[1]["transparency"] == UNMARKED

    # A grant signed before the member existed is marked with the defaults (the server's own rule).
    from serving.server import ai_generated_marking

    older = statement("sha256:" + "ab" * 32, deployment=41)
    assert "transparency" not in older
    marking, headers = ai_generated_marking(older)
    assert marking == expected_marking(older, DEFAULT_TRANSPARENCY) and headers["AI-Generated"] == "true"


@pytest.mark.parametrize(
    ("transparency", "named"),
    [
        ({"mark": False, "header": True, "disclosure": SAYS}, "transparency.header needs transparency.mark"),
        ({"mark": "yes", "header": False, "disclosure": SAYS}, "transparency.mark must be true or false"),
        ({"mark": True, "header": True}, "exactly mark, header, disclosure"),
        ({**MARKED, "watermark": "strong"}, "exactly mark, header, disclosure"),
        ({**MARKED, "disclosure": "two\nlines"}, "transparency.disclosure"),
        ({**MARKED, "disclosure": "x" * 301}, "transparency.disclosure"),
    ],
)
def test_a_grant_with_a_malformed_transparency_is_never_signed(
    signer: SignerKey, transparency: Any, named: str
) -> None:
    with pytest.raises(GrantError, match=named):
        sign_grant(statement("sha256:" + "ab" * 32, transparency=transparency), [signer])


# --- requests, digests, grants (in process) -------------------------------------------------------


@pytest.fixture
def _own_serving_root(own_serving_root: Path) -> None:
    """In-process grants and no worker: the deployment folders stay in the test's folder."""


@pytest.mark.django_db
@pytest.mark.usefixtures("_own_serving_root")
def test_the_setting_is_recorded_in_the_ledger_the_digest_and_the_signed_grant(
    ready: dict[str, Any], staging_policies: Path, settings: Any
) -> None:
    default = deploying.request(ready)
    assert default.transparency == DEFAULT_TRANSPARENCY
    requested = json.loads(bytes(Entry.objects.get(action="deployment.requested", subject_id=str(default.pk)).body))
    assert requested["payload"]["transparency"] == DEFAULT_TRANSPARENCY
    # The default adds nothing to the digest: a deployment from before the setting keeps its digest.
    assert deployment_digest(default) == deployment_digest(deploying.put(default, transparency={}))

    quiet = deploying.request(ready, name="quiet", transparency={"header": False, "disclosure": f"  {SAYS} "})
    assert quiet.transparency == NO_HEADER  # the header follows mark unless given; blanks trimmed
    twin = deploying.request(ready, name="quiet")
    digests = {deployment_digest(d) for d in (quiet, deploying.put(twin, transparency=quiet.transparency))}
    assert len(digests) == 1 and deployment_digest(twin) != deployment_digest(deploying.put(twin, transparency={}))

    approved = deploying.approve(ready, quiet)
    grant = approved.grants.get()
    verifiers = [k.verifier() for k in load_signer_keys(Path(settings.LEDGER_SIGNING_KEY_FILE))]
    signed = verify_grant(grant.text, verifiers)
    assert signed["transparency"] == NO_HEADER and grant.statement["transparency"] == NO_HEADER
    assert deploying.actions(approved)[-1] == "deployment.granted"

    legacy = deploying.approve(ready, deploying.put(deploying.request(ready, name="legacy"), transparency={}))
    assert verify_grant(legacy.grants.get().text, verifiers)["transparency"] == DEFAULT_TRANSPARENCY


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("environment", "transparency", "field"),
    [
        ("production", {"mark": False}, "transparency.mark"),
        ("staging", {"mark": "false"}, "transparency.mark"),
        ("staging", {"mark": False, "header": True}, "transparency.header"),
        ("staging", {"header": 1}, "transparency.header"),
        ("staging", {"disclosure": ""}, "transparency.disclosure"),
        ("staging", {"disclosure": "x" * 301}, "transparency.disclosure"),
        ("staging", {"disclosure": "one\ntwo"}, "transparency.disclosure"),
        ("staging", {"watermark": "strong"}, "transparency"),
        ("staging", ["mark"], "transparency"),
    ],
)
def test_a_bad_or_forbidden_setting_is_refused_naming_the_field_and_changes_nothing(
    ready: dict[str, Any], environment: str, transparency: Any, field: str
) -> None:
    before = Entry.objects.count()
    with pytest.raises(DomainError) as caught:
        deploying.request(ready, environment=environment, transparency=transparency)
    assert caught.value.code == "invalid_input" and field in caught.value.fields
    assert str(caught.value).startswith(field)
    assert Deployment.objects.count() == 0 and Entry.objects.count() == before


@pytest.mark.django_db
def test_unmarked_output_is_allowed_in_staging_and_recorded(ready: dict[str, Any]) -> None:
    unmarked = deploying.request(ready, transparency={"mark": False})
    assert unmarked.transparency == {"mark": False, "header": False, "disclosure": DEFAULT_TRANSPARENCY["disclosure"]}
    entry = json.loads(bytes(Entry.objects.get(action="deployment.requested", subject_id=str(unmarked.pk)).body))
    assert entry["payload"]["transparency"]["mark"] is False
    assert entry["subject"]["digest"] == deployment_digest(unmarked)


@pytest.mark.django_db
def test_the_api_answers_400_naming_transparency_and_shows_the_setting(ready: dict[str, Any], client: Any) -> None:
    admin_login(client, ready["ml_engineer"])
    url = f"/api/v1/projects/{ready['project'].slug}/deployments/"
    body = {"model_version": ready["base"].pk, "name": "assistant", "environment": "staging"}
    response = client.post(url, {**body, "transparency": "yes"}, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "transparency" in response.json()["error"]["fields"]
    assert Deployment.objects.count() == 0

    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["transparency"] == DEFAULT_TRANSPARENCY


@pytest.mark.django_db
def test_vllm_which_marks_nothing_is_refused_for_marked_output(ready: dict[str, Any], settings: Any) -> None:
    settings.SERVING_PLATFORM = "vllm"
    gpu = {**deploying.TARGET, "gpu_type": "h100", "gpu_count": 1}
    with pytest.raises(DomainError, match=r"^transparency.mark: vLLM does not mark"):
        deploying.request(ready, target=gpu, guard={"mode": "off"})
    unmarked = deploying.request(ready, target=gpu, guard={"mode": "off"}, transparency={"mark": False})
    assert unmarked.transparency["mark"] is False


@pytest.mark.django_db
def test_the_admin_request_form_sets_the_marking_and_the_page_shows_it(
    ready: dict[str, Any], staging_policies: Path, client: Any
) -> None:
    admin_login(client, ready["ml_engineer"])
    form = {
        "name": "support-assistant", "model_version": ready["base"].pk, "environment": "production",
        "runtime": "transformers", "prompt_template": "", "replicas": "1", "gpu_count": "0", "gpu_type": "",
        "max_tokens": "64", "guard_mode": "redact", "guard_entities": ["EMAIL_ADDRESS"], "comment": "",
    }  # fmt: skip
    before = Entry.objects.count()
    page = client.post("/admin/serving/deployment/add/", {**form, "transparency_unmarked": "on"})
    assert page.status_code == 200 and "unmarked output is allowed in staging only" in page.content.decode()
    assert not Deployment.objects.exists() and Entry.objects.count() == before

    answer = client.post(
        "/admin/serving/deployment/add/",
        {**form, "environment": "staging", "transparency_no_header": "on", "keep_transcripts": "on"},
    )
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    deployment = Deployment.objects.get()
    assert deployment.transparency == {**DEFAULT_TRANSPARENCY, "header": False} and deployment.keep_transcripts
    page = client.get(f"/admin/serving/deployment/{deployment.pk}/change/").content.decode()
    assert "marked: ai_generated metadata without the headers" in page
