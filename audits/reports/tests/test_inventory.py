"""The inventory at a past time (``audits/reports/inventory/``), rebuilt from the ledger alone and
checked against the database's rows as they were at several moments, before and after a data
subject's erasure.

The world, through the real services: a dataset version holding a person's e-mail (scanned,
reviewed, approved for training), a fine-tune run on it approved, and a model version registered
as trained on it (a copy of the tiny model: lineage is followed here, training is not); a security
scan of it (garak replaced by the factsheet tests' stand-in report) and a bias evaluation asked
for; deployments started by the real start service, whose model server is replaced by a stand-in
process that announces itself as the server does (``{"event": "serving"}``) and sleeps; a
rollback; the person's erasure; a retirement. The rows' states are recorded after each step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import path, reverse
from django.utils import timezone
from llmops_ledger_verify import merkle as offline_merkle
from llmops_ledger_verify import notes as offline_notes

from audits.checks import garak_scan
from audits.checks.models import BiasEvaluation, SecurityScan
from audits.checks.services import bias_evaluation_request, security_scan_execute, security_scan_request
from audits.ledger.selectors import tree_size
from audits.ledger.services import checkpoint_create
from audits.ledger.verification import known_verifiers
from audits.privacy.services import dsr_erase
from audits.privacy.tests.test_requests import ANA, CONTACTS, _approved_version, _searched
from audits.reports.inventory.api import parse_at
from audits.reports.inventory.selectors import inventory_at
from audits.reports.tests.factsheet_world import MAPPING, TEMPLATE, _copy, _evaluation_set, _stand_in_garak
from common.errors import DomainError
from common.testing import admin_login
from governance.models import ApprovalRequest
from governance.services import approval_request_decide, approval_request_submit
from registry.models import DatasetVersion, ModelVersion, PiiScan
from registry.services import (
    dataset_version_upload,
    model_version_register_folder,
    pii_scan_run,
    prompt_template_register,
)
from registry.tests.conftest import make_dataset
from serving.models import Deployment, DeploymentState
from serving.services import deployment_request, deployment_retire, deployment_rollback, deployment_start
from serving.services import start as start_module
from serving.tests.conftest import own_serving_root, staging_policies  # noqa: F401  (fixtures)
from training.models import FineTuneRun
from training.tests.conftest import PATTERN_ONLY, approve_run, elsewhere, request_run  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_serving_root", "staging_policies")]

TARGET = {"max_tokens": 16, "max_prompt_chars": 500}
GUARD = {"mode": "redact", "entities": ["EMAIL_ADDRESS"]}
# Stands in for ``python -m serving.server``: announces itself as the server does, then waits to be
# stopped. The grant file stays on its command line, which is how a retirement finds it.
STAND_IN = (
    "import json, time; print(json.dumps({'event': 'serving', 'port': 1, 'device': 'cpu'}), flush=True); "
    "time.sleep(300)"
)


@pytest.fixture
def stand_in_servers(monkeypatch: pytest.MonkeyPatch) -> Any:
    started: list[subprocess.Popen[bytes]] = []

    def popen(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        assert command[1:3] == ["-m", "serving.server"], command
        proc = subprocess.Popen([sys.executable, "-c", STAND_IN, *command[3:]], **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(start_module, "subprocess", types.SimpleNamespace(Popen=popen))
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _deploy(world: dict[str, Any], version: ModelVersion) -> Deployment:
    deployment = deployment_request(
        actor=world["ml_engineer"], model_version=version, name="assistant", environment="staging",
        target=TARGET, guard=GUARD,
    )  # fmt: skip
    request = approval_request_submit(
        actor=world["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    approval_request_decide(actor=world["platform-admin"], request_id=request.pk, decision="approve", reason="pilot")
    return _start(deployment)


def _start(deployment: Deployment) -> Deployment:
    deployment.refresh_from_db()
    grant = deployment.grants.order_by("-issued_at").first()
    started = deployment_start(deployment_id=deployment.pk, grant_id=str(grant.grant_id))
    assert started.state == DeploymentState.LIVE, started.refusal_reason
    return started


def _rows() -> dict[str, Any]:
    """The database's answer to the inventory's questions, as it is now."""
    approvals = {}
    for request in ApprovalRequest.objects.prefetch_related("decisions__approver").order_by("pk"):
        decisions = sorted(
            (d.approver.get_username(), d.role, d.decision) for d in request.decisions.all()
        )  # fmt: skip
        approvals[request.pk] = (request.state, request.subject_type, request.subject_id, decisions)
    return {
        "deployments": {
            str(d.pk): (d.state, str(d.model_version_id), d.environment) for d in Deployment.objects.order_by("pk")
        },
        "approvals": approvals,
        "model_versions": {
            str(v.pk): sorted(str(pk) for pk in _trained_on(v)) for v in ModelVersion.objects.order_by("pk")
        },
        "runs": {
            str(r.pk): (r.state, sorted(str(pk) for pk in r.dataset_versions.values_list("pk", flat=True)))
            for r in FineTuneRun.objects.order_by("pk")
        },
        "scans": {str(s.pk): (s.state, s.verdict or None) for s in SecurityScan.objects.order_by("pk")},
        "evaluations": {str(e.pk): (e.state, e.verdict or None) for e in BiasEvaluation.objects.order_by("pk")},
        "erased": {str(v.pk): v.erased_at is not None for v in DatasetVersion.objects.order_by("pk")},
    }


def _trained_on(version: ModelVersion) -> set[int]:
    """A model version's own dataset versions and those of the fine-tune run that made it."""
    found = set(version.dataset_versions.values_list("pk", flat=True))
    run = FineTuneRun.objects.filter(output=version).first()
    if run is not None:
        found |= set(run.dataset_versions.values_list("pk", flat=True))
    return found


def _inventory_rows(answer: dict[str, Any]) -> dict[str, Any]:
    """The same questions, answered by the inventory."""
    approvals = {}
    for a in answer["approvals"]:
        decisions = sorted((d["decider"], d["role"], d["decision"]) for d in a["decisions"])
        approvals[a["request"]] = (a["state"], a["subject"]["type"], a["subject"]["id"], decisions)
    model_versions = {}
    for v in answer["model_versions"]:
        links = list(v["dataset_versions"])
        run = next((r for r in answer["fine_tune_runs"] if r["id"] == v["fine_tune_run"]), None)
        links += run["dataset_versions"] if run else []
        model_versions[v["id"]] = sorted({link["id"] for link in links})
    return {
        "deployments": {
            d["id"]: (d["state"], d["model_version"]["id"], d["environment"]) for d in answer["deployments"]
        },
        "approvals": approvals,
        "model_versions": model_versions,
        "runs": {
            r["id"]: (r["state"], sorted(link["id"] for link in r["dataset_versions"]))
            for r in answer["fine_tune_runs"]
        },
        "scans": {s["id"]: (s["state"], s["verdict"]) for s in answer["security_scans"]},
        "evaluations": {e["id"]: (e["state"], e["verdict"]) for e in answer["bias_evaluations"]},
        "erased": {d["id"]: d["erased"] for d in answer["dataset_versions"]},
    }


def _facts(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without what depends on when it was asked: the checkpoint it is proved against
    and the ledger's size then."""
    return {k: v for k, v in answer.items() if k not in ("proofs", "checkpoint", "integrated")}


def _build(ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    moments: list[tuple[str, datetime, dict[str, Any]]] = []

    def moment(name: str) -> None:
        moments.append((name, timezone.now(), _rows()))

    moment("before")
    # A row of its own, so its blob is not the privacy tests' (an erasure there rewrites theirs).
    contacts = _approved_version(ready, "contacts", [*CONTACTS, {"text": "the inventory's copy", "channel": "web"}])
    run = approve_run(ready, request_run(ready, name="contacts-tone", dataset_versions=[contacts]))
    assert run.state == "queued"
    moment("run approved")
    # The tuned version is registered as trained on the contacts (a copy of the tiny model's
    # files: the lineage is what is followed here, not the training, which its own tests run).
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "imports").resolve()]):
        tuned, _ = model_version_register_folder(
            actor=ready["ml_engineer"], model=ready["base"].model, folder=str(_copy(ready, tmp_path, "tuned")),
            base=ready["base"], dataset_versions=[contacts],
        )  # fmt: skip

    monkeypatch.setattr(garak_scan, "run_scan", _stand_in_garak)
    scan = security_scan_request(actor=ready["ml_engineer"], model_version=tuned, profile_name="baseline")
    scan.refresh_from_db()
    assert security_scan_execute(scan_id=scan.pk, idempotency_key=str(scan.idempotency_key), worker="test")
    _evaluation_requested(ready, tuned)

    first = _deploy(ready, ready["base"])
    moment("base live")
    second = _deploy(ready, tuned)
    assert Deployment.objects.get(pk=first.pk).state == DeploymentState.REPLACED
    moment("tuned live, base replaced")
    restored = deployment_rollback(actor=ready["platform-admin"], deployment=second, reason="answers got worse")
    moment("rolled back, base starting")
    _start(restored)
    moment("base live again")
    return {"moments": moments, "first": first, "second": second, "contacts": contacts, "tuned": tuned, "run": run}


def _evaluation_requested(ready: dict[str, Any], version: ModelVersion) -> BiasEvaluation:
    """A bias evaluation of ``version`` asked for (queued; its run is the checks' tests' business)."""
    engineer = ready["ml_engineer"]
    dataset = make_dataset(ready, slug="loans")
    loans, _ = dataset_version_upload(actor=engineer, dataset=dataset, filename="e.jsonl", data=_evaluation_set())
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=loans).pk, actor=ready["system"])
    loans.refresh_from_db()
    request = approval_request_submit(
        actor=engineer, subject_type="dataset_version", subject_id=str(loans.pk),
        action="dataset_version.use_for_evaluation",
    )  # fmt: skip
    approval_request_decide(actor=ready["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    template, _ = prompt_template_register(
        actor=engineer, project=ready["project"], slug="loan-decision", body=TEMPLATE, intended_use="bias evaluation",
    )  # fmt: skip
    return bias_evaluation_request(
        actor=engineer, model_version=version, dataset_version=loans, prompt_template=template, label_field="label",
        sensitive_feature="group", label_mapping=MAPPING, profile_name="default",
    )  # fmt: skip


def test_the_inventory_at_past_times_matches_the_rows_then_before_and_after_an_erasure(
    ready: dict[str, Any], stand_in_servers: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = _build(ready, monkeypatch, tmp_path)
    moments = world["moments"]
    auditor = ready["auditor"]
    before_erasure = {name: _facts(inventory_at(user=auditor, at=at).as_dict()) for name, at, _ in moments}

    officer = ready["compliance_officer"]
    dsr_erase(actor=officer, request=_searched(ready, "erasure"))
    contacts = DatasetVersion.objects.get(pk=world["contacts"].pk)
    assert contacts.erased_at is not None
    moments.append(("person erased", timezone.now(), _rows()))
    deployment_retire(actor=ready["platform-admin"], deployment=world["first"], reason="end of the pilot")
    moments.append(("retired", timezone.now(), _rows()))
    checkpoint = checkpoint_create()
    assert checkpoint is not None

    for name, at, rows in moments:
        answer = inventory_at(user=auditor, at=at).as_dict()
        assert _inventory_rows(answer) == rows, name
        if name in before_erasure:  # the past does not change when a person is erased later
            assert _facts(answer) == before_erasure[name], name
        text = json.dumps(answer)
        assert ANA not in text and ANA.upper() not in text and "ana.silva" not in text.lower(), name

    # The states the story went through, as the inventory tells them.
    states = {name: _inventory_rows(inventory_at(user=auditor, at=at).as_dict()) for name, at, _ in moments}
    first, second = str(world["first"].pk), str(world["second"].pk)
    assert states["before"]["deployments"] == {}
    assert states["base live"]["deployments"][first][0] == "live"
    assert states["tuned live, base replaced"]["deployments"] == {
        first: ("replaced", str(ready["base"].pk), "staging"),
        second: ("live", str(world["tuned"].pk), "staging"),
    }
    assert states["rolled back, base starting"]["deployments"][first][0] == "starting"
    assert states["base live again"]["deployments"][first][0] == "live"
    assert states["retired"]["deployments"][first][0] == "retired"
    erased = str(world["contacts"].pk)
    assert not states["base live again"]["erased"][erased] and states["person erased"]["erased"][erased]
    assert states["retired"]["model_versions"][str(world["tuned"].pk)] == sorted([erased])

    # Every cited entry has its proof against the checkpoint, checked here with the offline
    # verifier's code: the signed note (the log's published keys) and each RFC 9162 path.
    answer = inventory_at(user=auditor, at=moments[-1][1]).as_dict()
    note = offline_notes.verify(answer["checkpoint"]["note"], known_verifiers())
    assert note.size == checkpoint.tree_size == answer["checkpoint"]["tree_size"]
    import base64

    from audits.ledger.models import Entry

    cited = _cited(answer)
    assert cited and set(map(int, answer["proofs"])) == cited
    for index in cited:
        proof = answer["proofs"][str(index)]
        assert proof["covered"] and proof["tree_size"] == note.size
        body = bytes(Entry.objects.get(index=index).body)
        assert base64.b64decode(proof["leaf_hash"]) == offline_merkle.leaf_hash(body)
        offline_merkle.verify_inclusion(
            index, note.size, offline_merkle.leaf_hash(body), [base64.b64decode(h) for h in proof["path"]], note.root
        )
    # A deployment's facts cite the entries they come from.
    row = next(d for d in answer["deployments"] if d["id"] == first)
    assert json.loads(bytes(Entry.objects.get(index=row["entry"]).body))["action"] == "deployment.retired"
    requested = json.loads(bytes(Entry.objects.get(index=row["requested_entry"]).body))
    assert requested["action"] == "deployment.requested" and requested["subject"]["id"] == first


def _cited(answer: dict[str, Any]) -> set[int]:
    found: set[int] = set()

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "proofs":
                    walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif (key == "entry" or key.endswith("_entry")) and isinstance(value, int) and key != "last_entry":
            found.add(value)

    walk(answer)
    return found


# --- The API ----------------------------------------------------------------------------------------


def test_at_is_parsed_and_a_garbled_or_future_time_is_refused_naming_it() -> None:
    now = timezone.now()
    assert parse_at(None, now=now) == now and parse_at("", now=now) == now
    assert parse_at("2026-01-02T03:04:05Z", now=now).isoformat() == "2026-01-02T03:04:05+00:00"
    assert parse_at("2026-01-02T03:04:05 01:00", now=now).isoformat() == "2026-01-02T02:04:05+00:00"  # "+" sent raw
    assert parse_at("2026-01-02", now=now).isoformat() == "2026-01-02T00:00:00+00:00"
    refusals = (
        ("yesterday", "not an ISO 8601"), ((now + timedelta(minutes=1)).isoformat(), "in the future"),
        ("0001-01-01T00:00:00+01:00", "outside the range of dates"),
    )  # fmt: skip
    for raw, why in refusals:
        with pytest.raises(DomainError, match=why) as refused:
            parse_at(raw, now=now)
        assert refused.value.fields == {"at": [refused.value.fields["at"][0]]} and refused.value.message.startswith(
            "at:"
        )


def test_the_endpoint_answers_readers_of_the_ledger_with_their_projects_facts(ready: dict[str, Any]) -> None:
    from serving.tests.deploying import approve

    approve(ready, deployment_request(
        actor=ready["ml_engineer"], model_version=ready["base"], name="assistant", environment="staging",
        target=TARGET, guard=GUARD,
    ))  # fmt: skip
    client = Client()
    assert client.get("/api/v1/inventory").status_code in (401, 403)
    admin_login(client, ready["ml_engineer"])
    assert client.get("/api/v1/inventory").status_code == 403  # reads no ledger entries
    admin_login(client, ready["auditor"])
    answer = client.get("/api/v1/inventory").json()
    [deployment] = answer["deployments"]
    assert deployment["state"] == "starting" and deployment["model_version"]["id"] == str(ready["base"].pk)
    assert [a["state"] for a in answer["approvals"] if a["subject"]["type"] == "deployment"] == ["approved"]
    assert all(not p["covered"] for p in answer["proofs"].values())  # no checkpoint signed yet
    bad = client.get("/api/v1/inventory", {"at": "last tuesday"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == {"at": ["not an ISO 8601 date-time"]}
    future = client.get("/api/v1/inventory", {"at": (timezone.now() + timedelta(days=1)).isoformat()})
    assert future.status_code == 400 and "in the future" in future.json()["error"]["message"]
    past = client.get("/api/v1/inventory", {"at": "2020-01-01T00:00:00Z"}).json()
    assert past["deployments"] == [] and past["entries_read"] == 0
    assert answer["integrated"] == tree_size() and answer["last_entry"] < tree_size()


def test_each_reader_sees_their_projects_facts_and_shared_weights_link_within_the_project(
    ready: dict[str, Any],
    elsewhere: dict[str, Any],  # noqa: F811  (the fixture)
) -> None:
    """``elsewhere`` registered the same tiny model's files: both projects' model versions have
    one weights digest, which is all a deployment's entry names."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from governance.roles import Role
    from governance.services import project_role_grant

    assert elsewhere["model_version"].weights_digest == ready["base"].weights_digest
    ours = deployment_request(
        actor=ready["ml_engineer"], model_version=ready["base"], name="assistant", environment="staging",
        target=TARGET, guard=GUARD,
    )  # fmt: skip
    theirs = deployment_request(
        actor=elsewhere["owner"], model_version=elsewhere["model_version"], name="secret", environment="staging",
        target=TARGET, guard=GUARD,
    )  # fmt: skip
    users = get_user_model().objects
    their_auditor = users.create_user(username="elsewhere-auditor")
    project_role_grant(
        actor=ready["system"], project=elsewhere["project"], user=their_auditor, role=Role.AUDITOR, reason="setup"
    )
    organisation = users.create_superuser(username="organisation-auditor")
    checkpoint_create()

    def seen(user: Any) -> dict[str, tuple[str | None, bool]]:
        answer = inventory_at(user=user, at=timezone.now()).as_dict()
        return {d["id"]: (d["model_version"]["id"], d["model_version"]["ambiguous"]) for d in answer["deployments"]}

    base, other = str(ready["base"].pk), str(elsewhere["model_version"].pk)
    assert seen(ready["auditor"]) == {str(ours.pk): (base, False)}
    assert seen(users.get(pk=their_auditor.pk)) == {str(theirs.pk): (other, False)}
    # Reading both projects, each deployment still links to its own project's version.
    assert seen(organisation) == {str(ours.pk): (base, False), str(theirs.pk): (other, False)}

    # The queries do not grow with the facts: one read of the entries, one of the checkpoint, the
    # stored hashes in batches of 500, the reader's projects.
    with CaptureQueriesContext(connection) as few:
        inventory_at(user=organisation, at=timezone.now())
    for name in ("helper", "helper-2", "helper-3"):
        deployment_request(
            actor=ready["ml_engineer"], model_version=ready["base"], name=name, environment="staging",
            target=TARGET, guard=GUARD,
        )  # fmt: skip
    checkpoint_create()
    with CaptureQueriesContext(connection) as more:
        assert len(inventory_at(user=organisation, at=timezone.now()).state.deployments) == 5
    assert len(more) == len(few), [q["sql"][:80] for q in more.captured_queries]


# --- The admin page ---------------------------------------------------------------------------------

import django.contrib.admin as _admin  # noqa: E402

from audits.reports.inventory.admin import inventory_urls  # noqa: E402

# The page's URL as the reports' admin adds it (see the module's docstring), with the admin's own,
# in a URLconf of this test's: the page is tested whether or not the reports' admin lists it yet.
urlpatterns = [path("admin/", (inventory_urls(_admin.site) + _admin.site.get_urls(), "admin", _admin.site.name))]


@pytest.mark.urls(__name__)
def test_the_admin_page_shows_the_deployments_at_a_time_with_links_to_entries_and_proofs(
    ready: dict[str, Any],
) -> None:
    from serving.tests.deploying import approve

    deployment = approve(ready, deployment_request(
        actor=ready["ml_engineer"], model_version=ready["base"], name="assistant", environment="staging",
        target=TARGET, guard=GUARD,
    ))  # fmt: skip
    checkpoint_create()
    client = Client()
    admin_login(client, ready["auditor"])
    url = reverse("admin:reports_inventory")
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert f'id="deployment-{deployment.pk}"' in html and "starting" in html and "approved" in html
    assert "platform-admin" in html  # the decider
    requested = json.loads(bytes(_entry("deployment.requested").body))
    assert f"/admin/ledger/entry/{requested['index']}/change/" in html
    assert f"/admin/ledger/entry/{requested['index']}/proof/" in html
    earlier = client.get(url, {"at": "2020-01-01T00:00"})
    assert earlier.status_code == 200 and 'id="inventory-empty"' in earlier.content.decode()
    bad = client.get(url, {"at": "soon"})
    assert bad.status_code == 400 and "not an ISO 8601 date-time" in bad.content.decode()
    admin_login(client, ready["ml_engineer"])
    assert client.get(url).status_code == 403


def _entry(action: str) -> Any:
    from audits.ledger.models import Entry

    return Entry.objects.filter(action=action).order_by("-index").first()


@pytest.mark.one_pass("embedded")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_auditor_finds_the_inventory_from_the_report_runs_and_follows_a_fact_to_its_proof(
    ready: dict[str, Any], live_server: Any
) -> None:
    """In a real browser: from the report runs' list to "Inventory at a time", a deployment with
    its decider, then the fact's ledger entry and its inclusion proof; an earlier time shows none."""
    from playwright.sync_api import expect

    from serving.tests.deploying import approve
    from tests.browser import PASSWORD, browser, require_chromium, sign_in_first_time

    require_chromium()
    deployment = approve(ready, deployment_request(
        actor=ready["ml_engineer"], model_version=ready["base"], name="assistant", environment="staging",
        target=TARGET, guard=GUARD,
    ))  # fmt: skip
    checkpoint_create()
    requested = json.loads(bytes(_entry("deployment.requested").body))["index"]
    auditor = ready["auditor"]
    auditor.set_password(PASSWORD)
    auditor.save()
    with browser(live_server.url, "auditor-inventory") as pages:
        page = pages.page
        sign_in_first_time(pages, auditor.username)
        pages.goto("/admin/reports/reportrun/")
        page.click("#inventory-link")
        page.wait_for_selector("#inventory-summary")
        row = page.locator(f"#deployment-{deployment.pk}")
        expect(row).to_contain_text("assistant")
        expect(row).to_contain_text("platform-admin")  # the decider of the approval
        pages.shot("inventory-now")
        row.locator(f"a[href='/admin/ledger/entry/{requested}/proof/']").first.click()
        page.wait_for_url(f"**/admin/ledger/entry/{requested}/proof/")
        expect(page.locator("#content")).to_contain_text(f"entry {requested}")
        pages.shot("inventory-fact-proof")
        page.go_back()
        page.fill("#id_at", "2020-01-01T00:00:00")
        page.click("#inventory-form [type=submit]")
        page.wait_for_selector("#inventory-empty")
        pages.shot("inventory-before")
