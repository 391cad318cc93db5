"""The ledger's read API: public checkpoint, keys and proofs; entries for ledger readers only."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audits.ledger import merkle, notes
from audits.ledger.selectors import tree_size
from audits.ledger.services import checkpoint_create
from governance.permissions import SYSTEM_USERNAME
from governance.roles import Role
from governance.services import api_token_create, project_create, project_role_grant

pytestmark = pytest.mark.django_db
User = get_user_model()


def _token_for(role: Role | None) -> dict[str, str]:
    system = User.objects.get(username=SYSTEM_USERNAME)
    user = User.objects.create_user(username=f"user-{role or 'none'}")
    if role is not None:
        project = project_create(actor=system, slug=f"p-{role}", name="P")
        project_role_grant(actor=system, project=project, user=user, role=role, reason="test setup")
    _, token = api_token_create(actor=system, user=user, name="t")
    return {"HTTP_AUTHORIZATION": f"Token {token}"}


def test_checkpoint_and_keys_are_public(client: Client, append: Callable[..., object]) -> None:
    missing = client.get("/api/v1/ledger/checkpoint")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "no_checkpoint"
    append(6)
    checkpoint_create()
    response = client.get("/api/v1/ledger/checkpoint")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    keys = client.get("/api/v1/ledger/keys").content.decode().splitlines()
    from audits.ledger.keys import VerifierKey

    checkpoint = notes.verify(response.content.decode(), [VerifierKey.decode(k) for k in keys])
    assert checkpoint.size == 6


def test_proofs_verify_against_the_signed_checkpoint(client: Client, append: Callable[..., object]) -> None:
    append(5)
    first = checkpoint_create()
    append(8)
    latest = checkpoint_create()
    assert first is not None and latest is not None
    inclusion = client.get("/api/v1/ledger/proofs/inclusion", {"index": 4}).json()
    assert inclusion["tree_size"] == 13
    merkle.verify_inclusion(
        4,
        13,
        base64.b64decode(inclusion["leaf_hash"]),
        [base64.b64decode(p) for p in inclusion["proof"]],
        bytes(latest.root),
    )
    consistency = client.get("/api/v1/ledger/proofs/consistency", {"first": 5, "second": 13}).json()
    merkle.verify_consistency(
        5, 13, bytes(first.root), bytes(latest.root), [base64.b64decode(p) for p in consistency["proof"]]
    )


@pytest.mark.parametrize(
    ("path", "params", "code", "field"),
    [
        ("inclusion", {"index": 9, "tree_size": 5}, "index_out_of_range", "index"),
        ("inclusion", {"index": 0, "tree_size": 6}, "beyond_checkpoint", "tree_size"),
        ("inclusion", {"index": "x"}, "invalid_input", "index"),
        ("inclusion", {}, "invalid_input", "index"),
        ("consistency", {"first": 4, "second": 2}, "invalid_range", "first"),
        ("consistency", {"first": 0, "second": 2}, "invalid_input", "first"),
        ("consistency", {"first": 1, "second": 7}, "beyond_checkpoint", "second"),
        ("consistency", {"first": "-1"}, "invalid_input", "first"),
        # Digits that str.isdigit() accepts but are not ASCII: "²" made int() fail (a 500), Arabic-Indic 1 read as 1.
        ("inclusion", {"index": "²"}, "invalid_input", "index"),
        ("inclusion", {"index": "\u0661"}, "invalid_input", "index"),
        ("consistency", {"first": "1", "second": "\u0663"}, "invalid_input", "second"),
        # Past what a 64-bit database integer holds, and past what int() parses at all.
        ("inclusion", {"index": 0, "tree_size": str(2**63)}, "invalid_input", "tree_size"),
        ("inclusion", {"index": "9" * 5000}, "invalid_input", "index"),
    ],
)
def test_bad_proof_requests_are_refused_clearly(
    client: Client, append: Callable[..., object], path: str, params: dict[str, object], code: str, field: str
) -> None:
    append(5)
    checkpoint_create()
    append(2)  # 7 entries, only 5 of them signed
    response = client.get(f"/api/v1/ledger/proofs/{path}", params)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == code and field in error["fields"]


def test_entries_need_the_ledger_read_permission(client: Client, append: Callable[..., object]) -> None:
    append(3)
    assert client.get("/api/v1/ledger/entries/").status_code == 401
    assert client.get("/api/v1/ledger/entries/", **_token_for(Role.ML_ENGINEER)).status_code == 403
    readers = {role: _token_for(role) for role in (Role.AUDITOR, Role.COMPLIANCE_OFFICER)}
    for auth in readers.values():
        page = client.get("/api/v1/ledger/entries/", {"offset": 1, "limit": 2}, **auth)
        assert page.status_code == 200
        body = page.json()
        assert [e["index"] for e in body["results"]] == [1, 2] and body["count"] == tree_size()
        assert body["results"][0]["entry"]["payload"] == {"i": 1}
        assert body["previous"] and (body["next"] is None) == (tree_size() <= 3)
    auditor = readers[Role.AUDITOR]
    detail = client.get("/api/v1/ledger/entries/2", **auditor)
    assert detail.status_code == 200 and detail.json()["index"] == 2
    assert client.get("/api/v1/ledger/entries/99", **auditor).status_code == 404
    too_wide = client.get("/api/v1/ledger/entries/", {"offset": 0, "limit": 5000}, **auditor)
    assert too_wide.status_code == 400 and "limit" in too_wide.json()["error"]["fields"]
    huge = client.get("/api/v1/ledger/entries/", {"offset": str(2**63)}, **auditor)
    assert huge.status_code == 400 and "offset" in huge.json()["error"]["fields"]
    assert client.get("/api/v1/ledger/entries/", {"offset": "²"}, **auditor).status_code == 400
    past_the_end = client.get("/api/v1/ledger/entries/", {"offset": tree_size()}, **auditor).json()
    assert past_the_end["results"] == [] and past_the_end["count"] == tree_size()
    assert client.get(f"/api/v1/ledger/entries/{2**64}", **auditor).status_code == 404
