"""Client credentials of the model server (issue 26, class 8): the real server process on the tiny
model refuses callers without a valid credential (401), limits each credential (429), logs
refusals as the API does, and stops accepting a revoked credential; the service issues and
revokes credentials for platform admins only, through the API and the admin, each change in the
ledger, and writes the signed client list the server reads.

Each server test calls from its own loopback address (127.0.0.N), so the per-address bucket of
failed attempts of one test does not spill into another's.
"""

from __future__ import annotations

import http.client
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audits.ledger.keys import SignerKey
from audits.ledger.models import Entry
from common.testing import admin_login
from governance.roles import Role
from governance.services import project_role_grant
from serving.clients import credential_digest, credential_new
from serving.tests.deploying import put, request
from serving.tests.test_server import (  # noqa: F401  (the module's fixtures, shared)
    Server,
    digest,
    keys,
    signer,
    start,
    statement,
    weights,
    workdir,
    write_client_list,
)

RATE = "4/m"


def post(server: Server, source: str, credential: str | None, payload: Any) -> tuple[int, dict[str, Any], Any]:
    """POST /v1/completions from the loopback address ``source``; status, body and headers."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60, source_address=(source, 0))
    headers = {"Content-Type": "application/json"}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    try:
        connection.request("POST", "/v1/completions", json.dumps(payload), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response.headers
    finally:
        connection.close()


def security_lines(server: Server) -> list[dict[str, Any]]:
    lines = [line for line in server.stderr().splitlines() if line.startswith('{"time"')]
    return [record for record in map(json.loads, lines) if record.get("logger") == "security"]


@pytest.fixture(scope="module")
def guarded(workdir: Path, keys: Path, weights: Path, digest: str, signer: SignerKey) -> Any:  # noqa: F811
    """A server accepting two credentials, ``RATE`` per credential."""
    grant = statement(digest)
    first, second = credential_new()[1], credential_new()[1]
    folder = workdir / "guarded"
    folder.mkdir()
    clients = folder / "clients.note"
    write_client_list(clients, grant["deployment"], [first, second], [signer])
    server = Server(
        folder, grant, [signer], keys, weights, "--client-credentials", str(clients), "--rate-limit", RATE,
        "--nlp-model", "blank",
    )  # fmt: skip
    server.wait_serving()
    yield {"server": server, "first": first, "second": second, "clients": clients, "grant": grant}
    server.stop()


def test_no_credential_or_a_wrong_one_is_401_and_logged_without_the_secret(guarded: dict[str, Any]) -> None:
    server, first = guarded["server"], guarded["first"]
    lines_before = len(server.log_lines()) if server.log.exists() else 0
    prefix = first.split("_")[1]
    wrong_secret = f"gsc_{prefix}_{'A' * 43}"
    for credential, reason in ((None, "missing_credential"), ("not-a-credential", "invalid_credential"),
                               (wrong_secret, "invalid_credential")):  # fmt: skip
        status, body, headers = post(server, "127.0.0.2", credential, {"prompt": "hello", "max_tokens": 2})
        assert status == 401, body
        assert body["error"]["code"] == "unauthenticated"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        event = security_lines(server)[-1]
        assert (event["event"], event["reason"], event["status"], event["client_ip"]) == (
            "authz.denied", reason, 401, "127.0.0.2"
        )  # fmt: skip
        assert event["path"] == "/v1/completions" and event["outcome"] == "denied"
    assert security_lines(server)[-1]["username"] == f"client:{prefix}"  # a known prefix is named
    assert "A" * 43 not in server.stderr() and first not in server.stderr()
    # Refused callers are not inference log lines: the log holds what was served.
    assert (len(server.log_lines()) if server.log.exists() else 0) == lines_before


def test_a_valid_credential_is_served_and_named_in_the_inference_log(guarded: dict[str, Any]) -> None:
    server, second = guarded["server"], guarded["second"]
    status, body, _ = post(server, "127.0.0.3", second, {"prompt": "the order shipped", "max_tokens": 2})
    assert status == 200, body
    assert server.log_lines()[-1]["client"] == second.split("_")[1]


def test_over_the_rate_limit_is_429_with_retry_after_and_others_are_not_slowed(guarded: dict[str, Any]) -> None:
    server, first, second = guarded["server"], guarded["first"], guarded["second"]
    # Each request draws on the credential's bucket, whatever it asks (an empty prompt: 400).
    statuses = [post(server, "127.0.0.4", first, {"prompt": ""})[0] for _ in range(4)]
    assert statuses == [400] * 4
    status, body, headers = post(server, "127.0.0.4", first, {"prompt": "hello"})
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert 1 <= int(headers["Retry-After"]) <= 15
    event = security_lines(server)[-1]
    assert (event["event"], event["status"], event["username"]) == (
        "ratelimit.exceeded", 429, f"client:{first.split('_')[1]}"
    )  # fmt: skip
    # Failed attempts from one address are limited there; a valid credential from it still works.
    stranger = [post(server, "127.0.0.5", "gsc_" + "0" * 12 + "_" + "B" * 43, {})[0] for _ in range(5)]
    assert stranger == [401] * 4 + [429]
    assert post(server, "127.0.0.5", second, {"prompt": ""})[0] == 400


def test_a_revoked_credential_is_refused_at_the_next_request(guarded: dict[str, Any], signer: SignerKey) -> None:  # noqa: F811
    server, clients, grant = guarded["server"], guarded["clients"], guarded["grant"]
    kept, revoked = credential_new()[1], credential_new()[1]
    write_client_list(clients, grant["deployment"], [kept, revoked], [signer])
    assert post(server, "127.0.0.6", revoked, {"prompt": ""})[0] == 400  # accepted (then a bad prompt)
    older = datetime.now(UTC)
    write_client_list(clients, grant["deployment"], [kept], [signer])
    started = time.monotonic()
    assert post(server, "127.0.0.6", revoked, {"prompt": ""})[0] == 401
    assert time.monotonic() - started < 5
    assert post(server, "127.0.0.6", kept, {"prompt": ""})[0] == 400
    # An older list brought back (a replay that still holds the revoked one) is refused: fail closed.
    write_client_list(clients, grant["deployment"], [kept, revoked], [signer], issued_at=older - timedelta(seconds=1))
    assert post(server, "127.0.0.7", revoked, {"prompt": ""})[0] == 401
    assert post(server, "127.0.0.7", kept, {"prompt": ""})[0] == 401
    assert "replay" in server.stderr()
    # So is a list signed by a key the server does not trust; a valid newer list restores service.
    write_client_list(clients, grant["deployment"], [kept, revoked], [SignerKey.generate("test")])
    assert post(server, "127.0.0.8", kept, {"prompt": ""})[0] == 401
    write_client_list(clients, grant["deployment"], [kept], [signer])
    assert post(server, "127.0.0.8", kept, {"prompt": ""})[0] == 400


def test_a_server_without_a_valid_client_list_refuses_to_start(start: Any, digest: str, tmp_path: Path) -> None:  # noqa: F811
    code, reason = start(statement(digest), "--client-credentials", str(tmp_path / "missing.note")).refusal()
    assert code == 3 and "cannot read the client list" in reason
    other = tmp_path / "other.note"
    write_client_list(other, "another-deployment", [credential_new()[1]], [SignerKey.generate("test")])
    code, reason = start(statement(digest), "--client-credentials", str(other)).refusal()
    assert code == 3 and "client list" in reason and "no signature by a known key" in reason


# --- The service: issuing, revoking, who may, the list it writes ---------------------------------


@pytest.fixture
def cast(ready: dict[str, Any]) -> dict[str, Any]:
    """``ready``'s people, a security and a fairness reviewer, and an outsider (no role here)."""
    users = get_user_model().objects
    for role in (Role.SECURITY_REVIEWER, Role.FAIRNESS_REVIEWER):
        user = users.create_user(username=role.value.replace("_", "-"))
        project_role_grant(actor=ready["system"], project=ready["project"], user=user, role=role, reason="setup")
        ready[role.value] = users.get(pk=user.pk)
    ready["outsider"] = users.create_user(username="outsider")
    return ready


ROLES = ["data_steward", "ml_engineer", "security_reviewer", "fairness_reviewer", "compliance_officer", "auditor",
         "platform-admin", "outsider", "anonymous"]  # fmt: skip
ISSUE = {"platform-admin": 201, "outsider": 404, "anonymous": 401}
LIST = {"outsider": 404, "anonymous": 401}


@pytest.mark.django_db
@pytest.mark.parametrize("who", ROLES)
def test_who_issues_lists_and_revokes_client_credentials(cast: dict[str, Any], who: str) -> None:
    from serving.services import deployment_client_credential_issue

    deployment = request(cast)
    existing, _ = deployment_client_credential_issue(
        actor=cast["platform-admin"], deployment=deployment, name="checkout", expires_in_days=30
    )
    entries = Entry.objects.count()
    client = Client()
    if who != "anonymous":
        admin_login(client, cast[who])
    issued = client.post(
        f"/api/v1/deployments/{deployment.pk}/client-credentials", {"name": "billing", "expires_in_days": 7},
        content_type="application/json",
    )  # fmt: skip
    assert issued.status_code == ISSUE.get(who, 403), issued.content
    listed = client.get(f"/api/v1/deployments/{deployment.pk}/client-credentials")
    assert listed.status_code == LIST.get(who, 200)
    revoked = client.post(f"/api/v1/client-credentials/{existing.pk}/revoke", {}, content_type="application/json")
    assert revoked.status_code == {"platform-admin": 200, "outsider": 404, "anonymous": 401}.get(who, 403)
    existing.refresh_from_db()
    if who == "platform-admin":
        body = issued.json()
        assert body["credential"].startswith(f"gsc_{body['prefix']}_") and body["state"] == "live"
        assert revoked.json()["state"] == "revoked" and existing.revoked_by == cast["platform-admin"]
        actions = list(Entry.objects.filter(index__gte=entries).order_by("index").values_list("action", flat=True))
        assert actions == ["deployment.client_credential_issued", "deployment.client_credential_revoked"]
        listed_prefixes = {row["prefix"] for row in listed.json()["results"]}
        assert listed_prefixes == {existing.prefix, body["prefix"]} and "credential" not in listed.json()["results"][0]
        assert body["credential"] not in json.dumps([bytes(e.body).decode() for e in Entry.objects.all()])
    else:
        assert existing.revoked_at is None and Entry.objects.count() == entries
        if who not in ("outsider", "anonymous"):
            assert listed.json()["results"][0]["prefix"] == existing.prefix


@pytest.mark.django_db
def test_bad_input_is_400_naming_the_field_and_an_ended_deployment_409(cast: dict[str, Any]) -> None:
    deployment = request(cast)
    client = Client()
    admin_login(client, cast["platform-admin"])
    url = f"/api/v1/deployments/{deployment.pk}/client-credentials"
    entries = Entry.objects.count()
    for payload, field in (({"name": "", "expires_in_days": 7}, "name"), ({"name": 5, "expires_in_days": 7}, "name"),
                           ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
                           ({"name": "x", "expires_in_days": 10**30}, "expires_in_days"),
                           ({"name": "x", "expires_in_days": 400}, "expires_in_days")):  # fmt: skip
        answer = client.post(url, payload, content_type="application/json")
        assert answer.status_code == 400, (payload, answer.content)
        assert field in answer.content.decode()
    put(deployment, state="retired")
    answer = client.post(url, {"name": "x", "expires_in_days": 7}, content_type="application/json")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "not_serving"
    assert Entry.objects.count() == entries and not deployment.client_credentials.exists()


@pytest.mark.django_db
def test_the_real_server_on_the_list_the_service_writes(
    cast: dict[str, Any], own_serving_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    """Issue through the API, served; revoke through the API, refused at the next request; a
    revocation whose write after the commit was lost is caught by the supervisor's next pass."""
    from registry.services import model_version_materialise
    from serving.selectors import client_list_path, deployment_folder
    from serving.services import client_list_write, deployments_supervise, grant_issue
    from serving.services.grants import signer_keys

    deployment = put(request(cast, guard={"mode": "off", "entities": []}), state="live")
    grant = grant_issue(deployment, cast["system"])
    folder = deployment_folder(deployment)
    folder.mkdir(parents=True)
    keys_file = folder / "verifier.keys"
    keys_file.write_text("".join(k.verifier().encode() + "\n" for k in signer_keys()))
    client_list_write(deployment)
    weights_folder = folder / "weights"
    model_version_materialise(cast["base"], weights_folder)
    server = Server(  # in the deployment's folder, as the worker starts it (supervision finds it there)
        folder, grant.statement, [], keys_file, weights_folder,
        "--client-credentials", str(client_list_path(deployment)), "--nlp-model", "blank", grant_text=grant.text,
    )  # fmt: skip
    server.wait_serving()
    put(deployment, pid=server.proc.pid)
    try:
        client = Client()
        admin_login(client, cast["platform-admin"])
        with django_capture_on_commit_callbacks(execute=True):
            issued = client.post(
                f"/api/v1/deployments/{deployment.pk}/client-credentials", {"name": "app", "expires_in_days": 1},
                content_type="application/json",
            ).json()  # fmt: skip
        credential = issued["credential"]
        assert post(server, "127.0.0.9", credential, {"prompt": "hello", "max_tokens": 2})[0] == 200
        with django_capture_on_commit_callbacks(execute=True):
            assert client.post(f"/api/v1/client-credentials/{issued['id']}/revoke").status_code == 200
        assert post(server, "127.0.0.9", credential, {"prompt": "hello", "max_tokens": 2})[0] == 401

        with django_capture_on_commit_callbacks(execute=True):
            second = client.post(
                f"/api/v1/deployments/{deployment.pk}/client-credentials", {"name": "app2", "expires_in_days": 1},
                content_type="application/json",
            ).json()  # fmt: skip
        assert post(server, "127.0.0.10", second["credential"], {"prompt": ""})[0] == 400
        # The write after this commit is lost (its callback never runs): the supervisor catches up.
        with django_capture_on_commit_callbacks(execute=False):
            assert client.post(f"/api/v1/client-credentials/{second['id']}/revoke").status_code == 200
        assert post(server, "127.0.0.10", second["credential"], {"prompt": ""})[0] == 400
        deployments_supervise()
        assert post(server, "127.0.0.10", second["credential"], {"prompt": ""})[0] == 401
    finally:
        server.stop()


@pytest.mark.django_db
def test_the_admin_page_issues_once_and_revokes_for_platform_admins_only(cast: dict[str, Any]) -> None:
    deployment = request(cast)
    url = f"/admin/serving/deployment/{deployment.pk}/client-credentials/"
    engineer = Client()
    admin_login(engineer, cast["ml_engineer"])
    assert engineer.post(url, {"do": "issue", "name": "x", "expires_in_days": 7}).status_code == 403
    assert not deployment.client_credentials.exists()

    client = Client()
    admin_login(client, cast["platform-admin"])
    refused = client.post(url, {"do": "issue", "name": "portal", "expires_in_days": 9999})
    assert refused.status_code == 200 and "nothing was issued" in refused.content.decode()
    assert "a whole number of days from 1 to 365" in refused.content.decode()
    assert not deployment.client_credentials.exists()
    page = client.post(url, {"do": "issue", "name": "portal", "expires_in_days": 7}).content.decode()
    row = deployment.client_credentials.get()
    shown = page.split('id="client-credential">', 1)[1].split("<", 1)[0]
    assert shown.startswith(f"gsc_{row.prefix}_") and row.digest == credential_digest(shown)
    assert shown not in client.get(url).content.decode()  # shown once
    assert client.post(url, {"do": "revoke", "credential": row.pk}).status_code == 302
    row.refresh_from_db()
    assert row.state == "revoked"
    assert list(Entry.objects.filter(subject_type="deployment", subject_id=str(deployment.pk))
                .values_list("action", flat=True).order_by("index"))[-2:] == [
        "deployment.client_credential_issued", "deployment.client_credential_revoked"
    ]  # fmt: skip
