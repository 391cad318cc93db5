"""The ledger's read API: public checkpoint, keys and proofs; entries for their readers only: the
auditors and compliance officers of the entry's project, and the organisation-wide auditors."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audits.ledger import merkle, notes
from audits.ledger.models import Entry
from audits.ledger.selectors import tree_size
from audits.ledger.services import checkpoint_create
from common.errors import Conflict, DomainError, PermissionDenied
from governance.permissions import SYSTEM_USERNAME
from governance.roles import Role
from governance.services import api_token_create, project_create, project_role_grant
from governance.services.auditors import organisation_auditor_grant, organisation_auditor_revoke
from registry.tests.conftest import make_dataset

pytestmark = pytest.mark.django_db
User = get_user_model()


def _token_for(role: Role | None, project: object = None, name: str = "") -> dict[str, str]:
    """A token of a new user holding ``role`` in ``project`` (by default a new project of its own)."""
    system = User.objects.get(username=SYSTEM_USERNAME)
    user = User.objects.create_user(username=name or f"user-{role or 'none'}")
    if role is not None:
        project = project or project_create(actor=system, slug=f"p-{role.replace('_', '-')}", name="P")
        project_role_grant(actor=system, project=project, user=user, role=role, reason="test setup")
    _, token = api_token_create(actor=system, user=user, name="t")
    return {"HTTP_AUTHORIZATION": f"Token {token}"}


def _about(*subjects: tuple[str, str]) -> set[int]:
    """The indexes of the entries about these subjects (type, id): the test's own reckoning of
    whose entries they are, from the subjects, apart from the ledger's attribution."""
    found: set[int] = set()
    for kind, pk in subjects:
        found |= set(Entry.objects.filter(subject_type=kind, subject_id=pk).values_list("index", flat=True))
    return found


def _every_page(client: Client, auth: dict[str, str], limit: int = 1000) -> list[int]:
    """The indexes of every entry the caller lists, following ``next`` from the first page."""
    indexes: list[int] = []
    url: str | None = f"/api/v1/ledger/entries/?limit={limit}"
    while url:
        page = client.get(url, **auth)
        assert page.status_code == 200, page.content
        indexes += [entry["index"] for entry in page.json()["results"]]
        url = page.json()["next"]
    return indexes


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


def test_entries_need_a_reading_role(client: Client, append: Callable[..., object]) -> None:
    assert client.get("/api/v1/ledger/entries/").status_code == 401
    assert client.get("/api/v1/ledger/entries/", **_token_for(Role.ML_ENGINEER)).status_code == 403
    readers = {role: _token_for(role) for role in (Role.AUDITOR, Role.COMPLIANCE_OFFICER)}
    append(3)  # the organisation's entries: no project's reader reads them
    for role, auth in readers.items():
        own = sorted(_about(("project", f"p-{role.replace('_', '-')}")))  # the project made, the role granted
        page = client.get("/api/v1/ledger/entries/", {"offset": 0, "limit": 1}, **auth)
        assert page.status_code == 200
        body = page.json()
        assert [e["index"] for e in body["results"]] == own[:1] and body["count"] == len(own) == 2
        assert body["results"][0]["entry"]["action"] == "project.created"
        assert body["previous"] is None and body["next"].endswith(f"offset={own[0] + 1}")
        second = client.get(body["next"], **auth).json()
        assert [e["index"] for e in second["results"]] == own[1:] and second["next"] is None
        back = client.get(second["previous"], **auth).json()
        assert [e["index"] for e in back["results"]] == own[:1] and back["previous"] is None
    auditor = readers[Role.AUDITOR]
    own_entry = min(_about(("project", "p-auditor")))
    detail = client.get(f"/api/v1/ledger/entries/{own_entry}", **auditor)
    assert detail.status_code == 200 and detail.json()["index"] == own_entry
    assert client.get("/api/v1/ledger/entries/99", **auditor).status_code == 404
    too_wide = client.get("/api/v1/ledger/entries/", {"offset": 0, "limit": 5000}, **auditor)
    assert too_wide.status_code == 400 and "limit" in too_wide.json()["error"]["fields"]
    huge = client.get("/api/v1/ledger/entries/", {"offset": str(2**63)}, **auditor)
    assert huge.status_code == 400 and "offset" in huge.json()["error"]["fields"]
    assert client.get("/api/v1/ledger/entries/", {"offset": "²"}, **auditor).status_code == 400
    past_the_end = client.get("/api/v1/ledger/entries/", {"offset": tree_size()}, **auditor).json()
    assert past_the_end["results"] == [] and past_the_end["count"] == 2
    assert client.get(f"/api/v1/ledger/entries/{2**64}", **auditor).status_code == 404


@pytest.fixture
def newcomer(people: dict[str, object]) -> dict[str, object]:
    """The red team's case: project "assistant" at work (a dataset registered, roles granted), and
    a new project whose auditor and compliance officer hold roles there and nowhere else."""
    dataset = make_dataset(people)
    newcomer = project_create(actor=people["system"], slug="newcomer", name="Newcomer")
    readers = {
        role: _token_for(role, newcomer, name=f"newcomer-{role}") for role in (Role.AUDITOR, Role.COMPLIANCE_OFFICER)
    }
    return {
        "readers": readers,
        "theirs": _about(("project", "newcomer")),
        "others": _about(("project", "assistant"), ("dataset", str(dataset.pk))),
    }


def test_a_reader_of_a_new_project_reads_no_entry_of_another_project(
    client: Client, newcomer: dict[str, object]
) -> None:
    others = newcomer["others"]
    assert len(others) >= 6  # the project, four role grants, the dataset
    for auth in newcomer["readers"].values():
        listed = _every_page(client, auth)
        assert set(listed) == newcomer["theirs"] and len(listed) == 3  # the project, two role grants
        page = client.get("/api/v1/ledger/entries/", {"limit": 1000}, **auth).content.decode()
        assert "tickets" not in page and "data-steward" not in page  # the other project's dataset, its people
        for index in sorted(others):
            detail = client.get(f"/api/v1/ledger/entries/{index}", **auth)
            assert detail.status_code == 404, index
            error = detail.json()["error"]  # the answer for an index no entry has
            assert (error["code"], error["message"]) == ("not_found", f"no entry with index {index}")


def test_pages_of_a_project_reader_hold_their_entries_only_and_lead_from_one_to_the_next(
    client: Client, people: dict[str, object]
) -> None:
    system = people["system"]
    newcomer = project_create(actor=system, slug="newcomer", name="Newcomer")
    auth = _token_for(Role.AUDITOR, newcomer, name="newcomer-auditor")
    for n in range(4):  # entries of the two projects, interleaved
        for project in (people["project"], newcomer):
            user = User.objects.create_user(username=f"u{n}-{project.slug}")
            project_role_grant(actor=system, project=project, user=user, role=Role.ML_ENGINEER, reason="more work")
    theirs = sorted(_about(("project", "newcomer")))
    assert len(theirs) == 6
    assert _every_page(client, auth, limit=2) == theirs
    second = client.get(f"/api/v1/ledger/entries/?limit=2&offset={theirs[1] + 1}", **auth).json()
    assert [e["index"] for e in second["results"]] == theirs[2:4] and second["count"] == 6
    back = client.get(second["previous"], **auth).json()
    assert [e["index"] for e in back["results"]] == theirs[:2]
    third = client.get(f"/api/v1/ledger/entries/?limit=2&offset={theirs[4]}", **auth).json()
    assert [e["index"] for e in client.get(third["previous"], **auth).json()["results"]] == theirs[2:4]


def test_an_organisation_wide_auditor_reads_every_entry_granted_and_revoked_through_the_ledger(
    client: Client, newcomer: dict[str, object], people: dict[str, object]
) -> None:
    system = people["system"]
    person = User.objects.create_user(username="org-auditor")
    _, token = api_token_create(actor=system, user=person, name="t")
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    assert client.get("/api/v1/ledger/entries/", **auth).status_code == 403
    with pytest.raises(PermissionDenied):  # a project's auditor may not widen anyone's reading
        organisation_auditor_grant(actor=people["auditor"], user=person, reason="audit")
    with pytest.raises(DomainError, match="say why"):
        organisation_auditor_grant(actor=system, user=person, reason=" ")
    size = tree_size()
    organisation_auditor_grant(actor=system, user=person, reason="the external audit of 2026")
    granted = Entry.objects.get(index=size)
    assert granted.action == "organisation.auditor_granted" and granted.subject_id == str(person.pk)
    assert tree_size() == size + 1
    with pytest.raises(Conflict):
        organisation_auditor_grant(actor=system, user=person, reason="again")
    assert User.objects.get(pk=person.pk).is_staff  # the admin's ledger pages too
    listed = _every_page(client, auth)
    assert (
        listed == list(range(tree_size()))
        and client.get("/api/v1/ledger/entries/", **auth).json()["count"] == tree_size()
    )
    for index in newcomer["others"] | newcomer["theirs"]:
        assert client.get(f"/api/v1/ledger/entries/{index}", **auth).status_code == 200
    organisation_auditor_revoke(actor=system, user=person, reason="the audit is over")
    assert Entry.objects.get(index=tree_size() - 1).action == "organisation.auditor_revoked"
    assert client.get("/api/v1/ledger/entries/", **auth).status_code == 403
    assert not User.objects.get(pk=person.pk).is_staff
    with pytest.raises(Conflict):
        organisation_auditor_revoke(actor=system, user=person, reason="again")


def test_checkpoints_and_proofs_stay_public_whatever_the_entry(client: Client, newcomer: dict[str, object]) -> None:
    latest = checkpoint_create()
    assert latest is not None
    index = max(newcomer["others"])
    for auth in [{}, *newcomer["readers"].values()]:
        assert client.get("/api/v1/ledger/checkpoint", **auth).status_code == 200
        inclusion = client.get("/api/v1/ledger/proofs/inclusion", {"index": index}, **auth).json()
        merkle.verify_inclusion(
            index, latest.tree_size, base64.b64decode(inclusion["leaf_hash"]),
            [base64.b64decode(p) for p in inclusion["proof"]], bytes(latest.root),
        )  # fmt: skip


def test_operators_grant_and_revoke_the_organisation_wide_auditor_from_the_command_line(
    people: dict[str, object],
) -> None:
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    call_command("organisation_auditor", "grant", "auditor", "--reason", "the external audit", stdout=out)
    assert "auditor now reads every ledger entry" in out.getvalue()
    entry = Entry.objects.get(index=tree_size() - 1)
    assert entry.action == "organisation.auditor_granted" and entry.actor_name == SYSTEM_USERNAME
    call_command("organisation_auditor", "list", stdout=(names := io.StringIO()))
    assert names.getvalue().split() == ["auditor"]
    with pytest.raises(CommandError, match="say why"):
        call_command("organisation_auditor", "revoke", "auditor")
    with pytest.raises(CommandError, match="no user"):
        call_command("organisation_auditor", "grant", "nobody", "--reason", "x")
    call_command("organisation_auditor", "revoke", "auditor", "--reason", "audit over", stdout=io.StringIO())
    assert Entry.objects.get(index=tree_size() - 1).action == "organisation.auditor_revoked"
