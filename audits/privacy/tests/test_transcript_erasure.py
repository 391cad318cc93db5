"""A data subject's request reaches the deployments' transcripts: the search counts the turns
naming the person, the access package and letter hold them, and the erasure blanks them (and the
raters' corrections of them) in a file the model server may be appending to meanwhile."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from audits.ledger.models import Entry
from audits.ledger.services import ERASED
from audits.privacy.services import (
    dsr_access_package,
    dsr_erase,
    dsr_erasure_plan,
    dsr_receive,
    dsr_search,
    dsr_verify_identity,
)
from audits.privacy.tests.planting import ANA, planted_version, trained_and_deployed
from common.errors import Conflict, DomainError, PermissionDenied
from serving.models import InferenceFeedback
from serving.server import TranscriptLog
from serving.services.preference import deployment_transcripts, transcript_path
from serving.services.transcripts import deployment_transcripts_erase

pytestmark = pytest.mark.django_db

OTHER = "hana.silva@example.org"  # a different customer: a whole-token match never takes her for Ana


def _turn(log: TranscriptLog, deployment: Any, prompt: str, completion: str) -> str:
    request_id = str(uuid.uuid4())
    log.write({"time": "2026-12-08T09:00:00.000Z", "request_id": request_id, "deployment": deployment.pk,
               "prompt": prompt, "completion": completion})  # fmt: skip
    return request_id


@pytest.fixture
def served(people: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A deployment whose server kept three turns, two naming Ana, written by the server's own
    writer; a foreign line (another deployment's) in its file; a rater's correction of one. The
    deployments' folders are this test's own."""
    from django.utils import timezone

    with override_settings(SERVING_ROOT=tmp_path / "serving"):
        yield _served(people, timezone.now())


def _served(people: dict[str, Any], now: Any) -> dict[str, Any]:
    _, deployment = trained_and_deployed(people, planted_version(people, "contacts"))
    path = transcript_path(deployment)
    log = TranscriptLog(path)
    ids = {
        "asks": _turn(log, deployment, f"I am {ANA}, where is my refund?", "It was sent on Monday."),
        "answered": _turn(log, deployment, "Who wrote ticket 7?", f"Ticket 7 came from {ANA.upper()}."),
        "other": _turn(log, deployment, f"I am {OTHER}, change my plan", "Done."),
    }
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"deployment": 999999, "request_id": "x", "prompt": ANA, "completion": "",
                                 "time": "t"}) + "\n")  # fmt: skip
    InferenceFeedback.objects.create(
        deployment=deployment, request_id=ids["asks"], rating=1, category="incorrect",
        correction=f"Tell {ANA} the refund takes 5 days.", given_by=people["ml_engineer"], created_at=now,
    )  # fmt: skip
    return {**people, "deployment": deployment, "ids": ids, "log": log, "path": path}


def _searched(people: dict[str, Any], kind: str, value: str = ANA) -> Any:
    from django.utils import timezone

    officer = people["compliance_officer"]
    request = dsr_receive(
        actor=officer, project=people["project"], regime="gdpr", kind=kind, channel="email",
        received_at=timezone.now(),
        identifiers=[{"kind": "email", "value": value}],
    )  # fmt: skip
    request = dsr_verify_identity(actor=officer, request=request, method="reply from the address on file")
    return dsr_search(actor=officer, request=request)


def test_the_search_counts_the_turns_and_the_access_package_and_letter_hold_them(
    served: dict[str, Any], tmp_path: Path
) -> None:
    import subprocess

    from audits.reports.letters import access_letter_issue

    deployment, ids = served["deployment"], served["ids"]
    request = _searched(served, "access")
    assert request.findings["transcripts"] == [{"id": deployment.pk, "name": deployment.name, "turns": 2}]
    assert "2 turn(s) of 1 deployment(s)' transcripts name them" in request.findings["message"]
    package, _ = dsr_access_package(actor=served["compliance_officer"], request=request)
    assert sorted(t["request_id"] for t in package["transcripts"]) == sorted([ids["asks"], ids["answered"]])
    assert {t["prompt"] for t in package["transcripts"]} == {f"I am {ANA}, where is my refund?", "Who wrote ticket 7?"}
    assert OTHER not in json.dumps(package["transcripts"])
    letter = access_letter_issue(actor=served["compliance_officer"], request=_searched(served, "access"))
    (tmp_path / "l.pdf").write_bytes(letter.pdf)
    words = " ".join(subprocess.run(["pdftotext", str(tmp_path / "l.pdf"), "-"], capture_output=True, text=True,
                                    check=True).stdout.split())  # fmt: skip
    assert "Conversations with our AI services that mention you" in words
    assert "2 conversations with our AI services" in words and "where is my refund?" in words
    from audits.reports.tests.test_report_content import ARTIFACTS

    pages = ARTIFACTS / "access-letter-transcripts"  # kept for a person to look at
    pages.mkdir(parents=True, exist_ok=True)
    for old in pages.glob("*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-r", "60", "-png", str(tmp_path / "l.pdf"), str(pages / "p")], check=True,
                   timeout=120)  # fmt: skip


def test_the_erasure_blanks_the_turns_and_corrections_and_the_server_writes_on(served: dict[str, Any]) -> None:
    officer, deployment, ids, path = (served[k] for k in ("compliance_officer", "deployment", "ids", "path"))
    request = _searched(served, "erasure")
    plan = dsr_erasure_plan(actor=officer, request=request)
    assert [(c.deployment.pk, sorted(c.turns)) for c in plan.transcripts] == [
        (deployment.pk, sorted([ids["asks"], ids["answered"]]))
    ]
    # A turn naming her again, written by the server after the page was shown: the plan changed.
    late = _turn(served["log"], deployment, f"{ANA} again: any news?", "Not yet.")
    before = path.read_bytes()
    with pytest.raises(Conflict, match="no longer the summary that was confirmed"):
        dsr_erase(actor=officer, request=request, confirmed_plan=plan.digest)
    assert path.read_bytes() == before and not Entry.objects.filter(action="deployment.transcripts_erased").exists()

    plan = dsr_erasure_plan(actor=officer, request=request)
    request = dsr_erase(actor=officer, request=request, confirmed_plan=plan.digest)
    assert request.erasure["transcripts"] == [{"id": deployment.pk, "name": deployment.name, "turns": 3}]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    erased = {r["request_id"] for r in lines if r["prompt"] == ERASED and r["completion"] == ERASED}
    assert erased == {ids["asks"], ids["answered"], late}
    ana = re.compile(rf"(?<![\w.]){re.escape(ANA)}", re.IGNORECASE)  # not hana.silva@...
    assert not [r for r in lines if r["deployment"] == deployment.pk and ana.search(json.dumps(r))]
    assert next(r for r in lines if r["request_id"] == ids["other"])["prompt"] == f"I am {OTHER}, change my plan"
    assert [r for r in lines if r["deployment"] == 999999] == [
        {"deployment": 999999, "request_id": "x", "prompt": ANA, "completion": "", "time": "t"}
    ]  # another deployment's line is not this erasure's to read
    assert InferenceFeedback.objects.get(request_id=ids["asks"]).correction == ERASED
    [entry] = Entry.objects.filter(action="deployment.transcripts_erased")
    payload = json.loads(bytes(entry.body))["payload"]
    assert payload == {"turns": 3, "corrections": 1, "reason": f"erasure of data-subject request {request.pk}"}
    assert ANA not in bytes(entry.body).decode().lower()
    # The erased turns are gone from what the preference export reads; the server writes on.
    assert set(deployment_transcripts(deployment)) == {ids["other"]}
    after = _turn(served["log"], deployment, "A new question", "A new answer.")
    assert set(deployment_transcripts(deployment)) == {ids["other"], after}
    # Nothing left to find: a new search finds no turn.
    assert _searched(served, "access").findings["transcripts"] == []


def test_only_an_officer_erases_transcripts_and_bad_input_changes_nothing(served: dict[str, Any]) -> None:
    deployment, path = served["deployment"], served["path"]
    before = path.read_bytes()
    find = lambda text: [(0, len(text))] if ANA in text.lower() else []  # noqa: E731
    with pytest.raises(PermissionDenied):
        deployment_transcripts_erase(actor=served["ml_engineer"], deployment=deployment, find=find, reason="r")
    with pytest.raises(DomainError, match="reason: may not be blank"):
        deployment_transcripts_erase(actor=served["compliance_officer"], deployment=deployment, find=find, reason=" ")
    assert path.read_bytes() == before and InferenceFeedback.objects.get().correction.startswith("Tell ")
    assert not Entry.objects.filter(action="deployment.transcripts_erased").exists()


def test_the_officer_sees_the_transcripts_in_the_admin_from_search_to_erasure(served: dict[str, Any]) -> None:
    from django.test import Client

    from audits.privacy.tests.test_admin import LIST, page, text, told
    from common.testing import admin_login

    client = Client()
    admin_login(client, served["compliance_officer"])
    deployment = served["deployment"]
    request = _searched(served, "erasure")
    assert f"Deployments whose transcripts name the person Deployment Id Turns {deployment.name} {deployment.pk} 2" in (
        text(client.get(page(request.pk)))
    )
    confirm = client.get(f"{LIST}{request.pk}/erase/")
    words = text(confirm)
    assert "Transcripts that name the person (1)" in words
    assert f"{deployment.name} {deployment.pk} {deployment.get_state_display()} 2" in words
    assert "refund" not in words  # the page counts the turns, it does not show them
    plan = confirm.context["form"]["plan"].value()
    erased = client.post(f"{LIST}{request.pk}/erase/", {"reference": f"DSR-{request.pk}", "plan": plan}, follow=True)
    assert "2 transcript turn(s) erased" in told(erased)[0]
    assert f"Transcripts: turns erased (prompt, completion and raters' corrections) Deployment Id Turns " \
           f"{deployment.name} {deployment.pk} 2" in text(erased)  # fmt: skip


def test_no_line_the_server_writes_while_erasures_run_is_lost_or_torn(served: dict[str, Any]) -> None:
    """The server's writer (a thread here, with its own lock file handle as in its own process)
    appends turns naming Ana while erasures write the file anew and swap it in."""
    import threading

    deployment, log, path = served["deployment"], served["log"], served["path"]
    written: list[str] = []
    done, first = threading.Event(), threading.Event()

    def server() -> None:
        for i in range(300):
            if i == 150:  # half written while the first erasure runs, half after it, against the next
                first.wait(60)
            written.append(_turn(log, deployment, f"{ANA} asks question {i}", "An answer."))
        done.set()

    find = lambda text: [(0, len(text))] if ANA in text else []  # noqa: E731
    thread = threading.Thread(target=server)
    thread.start()
    erasures = 0
    while not done.is_set() or erasures < 2:
        deployment_transcripts_erase(actor=served["compliance_officer"], deployment=deployment, find=find, reason="r")
        erasures += 1
        first.set()
    thread.join()
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.splitlines()]  # none torn: each parses
    ids = [r["request_id"] for r in lines]
    assert len(ids) == len(set(ids)) == 3 + 1 + 300 and set(written) <= set(ids), erasures


def test_turns_past_the_retention_period_are_dropped_daily_with_their_corrections(served: dict[str, Any]) -> None:
    """Storage limitation: the beat's task drops the turns older than the retention period (the
    fixture's turns are of 2026-12-08 09:00 UTC), keeps the newer ones byte for byte, and blanks the
    corrections of those it dropped."""
    from datetime import UTC, datetime

    from django.contrib.auth import get_user_model

    from serving.services.transcripts import transcripts_expire
    from serving.tasks import expire_transcripts

    deployment, log, path, ids = served["deployment"], served["log"], served["path"], served["ids"]
    newer = str(uuid.uuid4())
    log.write({"time": "2027-03-01T10:00:00.000Z", "request_id": newer, "deployment": deployment.pk,
               "prompt": "a later question", "completion": "a later answer"})  # fmt: skip
    kept = [line for line in path.read_bytes().splitlines(keepends=True) if newer.encode() in line or b"999999" in line]
    system = get_user_model().objects.get(username="system")
    with override_settings(SERVING_TRANSCRIPT_RETENTION_DAYS=0):
        assert transcripts_expire(actor=system, now=datetime(2027, 3, 10, tzinfo=UTC)) == {}  # kept for good
    with override_settings(SERVING_TRANSCRIPT_RETENTION_DAYS=30):
        assert transcripts_expire(actor=system, now=datetime(2027, 3, 10, tzinfo=UTC)) == {deployment.pk: 3}
        assert transcripts_expire(actor=system, now=datetime(2027, 3, 10, tzinfo=UTC)) == {}
    with override_settings(SERVING_TRANSCRIPT_RETENTION_DAYS=36500):
        assert expire_transcripts() == {}  # the beat's task, today, with a century's retention
    assert path.read_bytes().splitlines(keepends=True) == kept  # the foreign line and the newer turn
    assert set(deployment_transcripts(deployment)) == {newer}
    assert InferenceFeedback.objects.get(request_id=ids["asks"]).correction == ERASED
    [entry] = Entry.objects.filter(action="deployment.transcripts_expired")
    assert json.loads(bytes(entry.body))["payload"] == {
        "turns": 3, "corrections": 1, "before": "2027-02-08T00:00:00Z", "retention_days": 30
    }  # fmt: skip


def test_a_turn_whose_request_id_is_not_the_servers_is_still_erased(served: dict[str, Any]) -> None:
    deployment, path = served["deployment"], served["path"]
    served["log"].write({"time": "2026-12-08T09:01:00.000Z", "request_id": "not-a-uuid", "deployment": deployment.pk,
                         "prompt": f"{ANA} here", "completion": "ok"})  # fmt: skip
    find = lambda text: [(0, len(text))] if ANA in text else []  # noqa: E731
    erased = deployment_transcripts_erase(
        actor=served["compliance_officer"], deployment=deployment, find=find, reason="r"
    )
    assert "not-a-uuid" in erased and len(erased) == 3
    assert f"{ANA} here" not in path.read_text()
