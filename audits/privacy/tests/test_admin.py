"""The data-subject request pages of the admin, step by step, through Django's test client and the
real services: filing a request, each step's button, the erasure's confirmation page and its plan,
the deadlines in the request's time zone, and every refusal shown as a message that changed
nothing. An auditor reads the same pages without a button."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone

from audits.ledger.models import DataSubjectKey, Entry
from audits.ledger.services import ERASED, vault_open
from audits.privacy.deadlines import describe, gdpr_deadlines
from audits.privacy.models import DataSubjectRequest, ModelReview, RequestState
from audits.privacy.services import (
    dsr_erase,
    dsr_erasure_plan,
    dsr_receive,
    dsr_search,
    dsr_verify_identity,
    legal_hold_place,
    package_sha256,
)
from audits.privacy.tests.planting import ANA, CONTACTS, planted_version, trained_and_deployed
from common.errors import Conflict
from common.testing import admin_login
from registry.models import DatasetVersion

pytestmark = pytest.mark.django_db

LIST = "/admin/privacy/datasubjectrequest/"


def page(pk: int) -> str:
    return f"{LIST}{pk}/change/"


def step(pk: int, name: str) -> str:
    return f"{LIST}{pk}/step/{name}/"


def told(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def actions(request: DataSubjectRequest) -> list[str]:
    return list(
        Entry.objects.filter(subject_type="data_subject_request", subject_id=str(request.pk))
        .order_by("index")
        .values_list("action", flat=True)
    )


def text(response: Any) -> str:
    """The page's words, tags stripped and spaces folded: what a reader sees."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", response.content.decode(), flags=re.S)
    body = re.sub(r"</?(strong|code|a|span|b|em)\b[^>]*>", "", body)  # inline: no space of their own
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


@pytest.fixture
def officer(people: dict[str, Any]) -> Client:
    client = Client()
    admin_login(client, people["compliance_officer"])
    return client


@pytest.fixture
def auditor(people: dict[str, Any]) -> Client:
    client = Client()
    admin_login(client, people["auditor"])
    return client


def receive(people: dict[str, Any], kind: str = "erasure", regime: str = "gdpr", **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "actor": people["compliance_officer"], "project": people["project"], "regime": regime, "kind": kind,
        "channel": "email", "received_at": timezone.now() - timedelta(days=1), "tz": "Europe/Berlin",
        "identifiers": [{"kind": "email", "value": ANA}],
    }  # fmt: skip
    arguments.update(overrides)
    return dsr_receive(**arguments)


def searched(people: dict[str, Any], kind: str = "erasure", **overrides: Any) -> DataSubjectRequest:
    officer = people["compliance_officer"]
    request = dsr_verify_identity(actor=officer, request=receive(people, kind, **overrides), method="reply on file")
    return dsr_search(actor=officer, request=request)


# --- filing a request ----------------------------------------------------------------------------


def test_an_officer_files_a_request_on_the_add_page(people: dict[str, Any], officer: Client) -> None:
    form = officer.get(f"{LIST}add/")
    assert form.status_code == 200
    for name in ("project", "regime", "kind", "channel", "tz", "received_at", "email", "phone", "name"):
        assert f'name="{name}"' in form.content.decode()
    filed = officer.post(f"{LIST}add/", {
        "project": people["project"].pk, "regime": "gdpr", "kind": "erasure", "channel": "email",
        "tz": "Europe/Berlin", "received_at": "2026-12-01T09:30", "email": ANA,
    }, follow=True)  # fmt: skip
    request = DataSubjectRequest.objects.get()
    assert filed.redirect_chain[-1][0] == page(request.pk)
    assert told(filed) == [f"DSR-{request.pk} filed: received: verify the requester's identity next."]
    # The wall-clock time was read in the request's zone: 09:30 in Berlin is 08:30 UTC.
    assert request.received_at == datetime(2026, 12, 1, 8, 30, tzinfo=UTC) and request.tz == "Europe/Berlin"
    assert request.state == RequestState.RECEIVED and request.received_by == people["compliance_officer"]
    assert vault_open(request.identifiers_sealed) == [{"kind": "email", "value": ANA}]
    assert actions(request) == ["data_subject_request.received"]
    words = text(filed)
    assert "Received 1 Dec 2026, 09:30 Europe/Berlin" in words
    assert "Respond due 1 Jan 2027, 23:59 Europe/Berlin" in words  # one month from the day of receipt
    assert ANA not in filed.content.decode()  # the page shows kinds and keyed hashes, never the address


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"email": ""}, None, "give at least one identifier"),
        ({"kind": "delete"}, "kind", "a gdpr request is one of access, erasure, rectification, objection"),
        ({"received_at": "2099-01-01T00:00"}, "received_at", "is in the future"),
        ({"received_at": "1999-12-31T12:00"}, "received_at", "is before 2000-01-01"),
        ({"received_at": "yesterday"}, "received_at", "Enter a valid date/time."),
        ({"tz": "Mars/Olympus"}, "tz", "Select a valid choice."),
        ({"email": "x" * 501}, "email", "at most 500 characters"),
    ],
)
def test_a_bad_request_form_names_the_problem_and_files_nothing(
    people: dict[str, Any], officer: Client, change: dict[str, str], field: str | None, message: str
) -> None:
    body = {"project": people["project"].pk, "regime": "gdpr", "kind": "erasure", "channel": "email",
            "tz": "UTC", "received_at": "2026-12-01T09:30", "email": ANA, **change}  # fmt: skip
    before = Entry.objects.count()
    answer = officer.post(f"{LIST}add/", body)
    assert answer.status_code == 200
    errors = answer.context["form"].errors
    assert message in " ".join(errors[field] if field else errors["__all__"])
    assert not DataSubjectRequest.objects.exists() and Entry.objects.count() == before


def test_an_auditor_may_not_file_and_sees_no_add_button_or_actions(people: dict[str, Any], auditor: Client) -> None:
    receive(people)
    assert auditor.get(f"{LIST}add/").status_code == 403
    listing = auditor.get(LIST)
    assert listing.status_code == 200
    assert f"{LIST}add/" not in listing.content.decode() and 'name="action"' not in listing.content.decode()
    refused = auditor.post(f"{LIST}add/", {"project": people["project"].pk, "regime": "gdpr", "kind": "access",
                                          "channel": "email", "tz": "UTC", "received_at": "2026-12-01T09:30",
                                          "email": "someone@example.org"})  # fmt: skip
    assert refused.status_code == 403 and DataSubjectRequest.objects.count() == 1


# --- the steps -----------------------------------------------------------------------------------


def test_an_erasure_request_from_receipt_to_completion(people: dict[str, Any], officer: Client) -> None:
    contacts = planted_version(people, "contacts")
    model_version, deployment = trained_and_deployed(people, contacts)
    request = receive(people)

    shown = officer.get(page(request.pk))
    assert [a["name"] for a in shown.context["actions"]] == ["verify-identity", "extend", "deny", "withdraw"]
    assert "Read only" not in text(shown)

    # Verify identity: a blank method is refused by the form, nothing changes.
    blank = officer.post(step(request.pk, "verify-identity"), {"method": "  "})
    assert blank.status_code == 200 and "This field is required." in text(blank)
    assert told(blank) == [f"DSR-{request.pk}: record identity verified: check the form below; nothing changed"]
    assert DataSubjectRequest.objects.get(pk=request.pk).state == RequestState.RECEIVED
    verified = officer.post(step(request.pk, "verify-identity"), {"method": "reply from the address on file"},
                            follow=True)  # fmt: skip
    assert told(verified) == [f"DSR-{request.pk}: identity verified (reply from the address on file)"]
    assert "State Identity verified: search for the person's data next" in text(verified)

    # Search: the findings as tables, no raw JSON.
    found = officer.post(step(request.pk, "search"), follow=True)
    assert told(found) == [f"DSR-{request.pk}: searched: 1 dataset version(s) of project assistant hold this person"]
    words = text(found)
    assert f"assistant/contacts v1 {contacts.pk} email live" in words
    assert f"assistant/tone v1 {model_version.pk} {contacts.pk} trained on them" in words
    assert f"tone-assistant {deployment.pk} staging" in words
    assert '"dataset_versions"' not in found.content.decode() and "{&quot;" not in found.content.decode()
    assert [a["name"] for a in found.context["actions"]][:3] == ["search", "erase", "extend"]

    # The confirmation page lists exactly what the erasure will change: the plan of the service.
    confirm = officer.get(f"{LIST}{request.pk}/erase/")
    assert confirm.status_code == 200
    plan = dsr_erasure_plan(actor=people["compliance_officer"], request=request)
    assert [(c.version.pk, sorted(c.records)) for c in plan.versions] == [(contacts.pk, [1])]
    words = text(confirm)
    kept = len(CONTACTS) - 1
    assert f"assistant/contacts v1 {contacts.pk} {len(CONTACTS)} 1 {kept} a new version of the dataset holds" in words
    assert "Dataset versions to be replaced (1)" in words and "Model reviews to be opened (1)" in words
    assert f"assistant/tone v1 {model_version.pk} {contacts.pk} trained on them" in words
    assert "Deployments affected (1)" in words and f"tone-assistant {deployment.pk} staging requested" in words
    assert "1 vault key(s) shredded" in words
    assert confirm.context["form"]["plan"].value() == plan.digest

    # A wrong reference erases nothing.
    before = Entry.objects.count()
    wrong = officer.post(f"{LIST}{request.pk}/erase/", {"reference": f"DSR-{request.pk + 1}", "plan": plan.digest})
    assert wrong.status_code == 200 and f"type DSR-{request.pk} exactly; nothing was erased" in text(wrong)
    assert Entry.objects.count() == before and DatasetVersion.objects.get(pk=contacts.pk).erased_at is None

    erased = officer.post(f"{LIST}{request.pk}/erase/", {"reference": f"DSR-{request.pk}", "plan": plan.digest},
                          follow=True)  # fmt: skip
    assert erased.redirect_chain[-1][0] == page(request.pk)
    assert told(erased) == [
        f"DSR-{request.pk}: erased: 1 dataset version(s) replaced, 1 model review(s) opened, 1 vault key(s) "
        "shredded. The request is now erased: complete it once the requester is told."
    ]
    request.refresh_from_db()
    assert request.state == RequestState.ERASED and request.erased_at is not None
    new = DatasetVersion.objects.get(parent=contacts)
    review = ModelReview.objects.get(request=request)
    words = text(erased)
    assert "State Erased: the person's data is gone" in words
    assert f"assistant/contacts v1 {contacts.pk} email erased; replaced by assistant/contacts v2 (id {new.pk})" in words
    assert f"assistant/contacts v1 (id {contacts.pk}) assistant/contacts v2 (id {new.pk}), scanned again 1" in words
    assert f"review {review.pk} assistant/tone v1 open" in words
    assert [a["name"] for a in erased.context["actions"]] == ["complete", "extend"]
    assert vault_open(request.identifiers_sealed) == ERASED
    assert DataSubjectKey.objects.get(ref=request.subject_ref).key is None

    # Erasing twice is refused, as a message.
    again = officer.get(f"{LIST}{request.pk}/erase/", follow=True)
    assert told(again) == [f"DSR-{request.pk}: erasure refused: request {request.pk} was carried out on "
                           f"{request.erased_at:%Y-%m-%d}"]  # fmt: skip
    # Denying an erased request would record an answer that did not happen.
    deny = officer.post(step(request.pk, "deny"), {"basis": "manifestly unfounded"}, follow=True)
    assert told(deny) == [f"DSR-{request.pk}: request {request.pk} is erased; a denial needs it received or "
                          "identity_verified or searched"]  # fmt: skip

    done = officer.post(step(request.pk, "complete"), {"nature": "told the requester by e-mail"}, follow=True)
    assert told(done) == [f"DSR-{request.pk}: completed (told the requester by e-mail)"]
    request.refresh_from_db()
    assert request.state == RequestState.COMPLETED and done.context["actions"] == []
    assert "answered" in text(done) and "State Completed" in text(done)
    assert actions(request) == [
        "data_subject_request.received", "data_subject_request.identity_verified", "data_subject_request.searched",
        "data_subject_request.erased", "data_subject_request.completed",
    ]  # fmt: skip
    ledger = done.context["entries"]
    assert [e.action for e, _ in ledger] == actions(request)


def test_an_access_request_downloads_its_package(people: dict[str, Any], officer: Client) -> None:
    contacts = planted_version(people, "contacts")
    request = searched(people, "access")
    shown = officer.get(page(request.pk))
    # The signed letter's step shows where the reports app's page is mounted (audits/reports/tests/test_letters.py).
    names = [a["name"] for a in shown.context["actions"] if a["name"] != "access-letter"]
    assert names[:2] == ["search", "access-package"]
    assert "complete" not in names  # the package comes first
    download = officer.post(step(request.pk, "access-package"))
    assert download.status_code == 200
    assert download["Content-Disposition"] == f'attachment; filename="access-package-DSR-{request.pk}.json"'
    package = json.loads(download.content)
    request.refresh_from_db()
    assert package_sha256(package) == request.package_sha256 == download["X-Package-SHA256"]
    assert [(v["id"], v["records"]) for v in package["dataset_versions"]] == [(contacts.pk, 1)]
    assert ANA in package["records"][0]["fields"]["text"]
    assert actions(request)[-1] == "data_subject_request.access_package_issued"
    after = officer.get(page(request.pk))
    assert f"SHA-256 {request.package_sha256}" in text(after)
    done = officer.post(step(request.pk, "complete"), {"nature": "package sent by e-mail"}, follow=True)
    assert DataSubjectRequest.objects.get(pk=request.pk).state == RequestState.COMPLETED, told(done)


def test_extend_deny_withdraw_and_confirm_receipt(people: dict[str, Any], officer: Client) -> None:
    gdpr = receive(people, "access")
    three_months = gdpr_deadlines(gdpr.received_at, tz="Europe/Berlin", extended=True).respond_by
    due = f"{three_months.day.day} {three_months.day:%b %Y}, 23:59 Europe/Berlin"
    # Extension: the reason is needed; the new deadline is said in the request's zone; only once.
    shown = officer.get(page(gdpr.pk))
    assert f"Extended, the response would be due {due}" in text(shown)
    blank = officer.post(step(gdpr.pk, "extend"), {"reason": ""})
    assert blank.status_code == 200 and blank.context["open_step"] == "extend"
    assert DataSubjectRequest.objects.get(pk=gdpr.pk).extended is False
    extended = officer.post(step(gdpr.pk, "extend"), {"reason": "many datasets to search"}, follow=True)
    assert told(extended) == [f"DSR-{gdpr.pk}: extended: response {due}"]
    assert "extend" not in [a["name"] for a in extended.context["actions"]]
    twice = officer.post(step(gdpr.pk, "extend"), {"reason": "again"}, follow=True)
    assert told(twice) == [f"DSR-{gdpr.pk}: request {gdpr.pk} was already extended; only once is allowed"]
    # GDPR has no confirmation of receipt: no button, and a post anyway is refused.
    assert "confirm-receipt" not in [a["name"] for a in extended.context["actions"]]
    refused = officer.post(step(gdpr.pk, "confirm-receipt"), follow=True)
    assert told(refused) == [f"DSR-{gdpr.pk}: a gdpr access request has no confirmation step"]
    # Denial with its basis.
    denied = officer.post(step(gdpr.pk, "deny"), {"basis": "GDPR Art. 12(5): manifestly unfounded",
                                                 "nature": "letter sent"}, follow=True)  # fmt: skip
    assert told(denied) == [f"DSR-{gdpr.pk}: denied (GDPR Art. 12(5): manifestly unfounded)"]
    assert "Basis of the denial GDPR Art. 12(5): manifestly unfounded" in text(denied)
    assert DataSubjectRequest.objects.get(pk=gdpr.pk).state == RequestState.DENIED

    ccpa = receive(people, "delete", regime="ccpa", tz="America/Los_Angeles")
    shown = officer.get(page(ccpa.pk))
    assert [a["name"] for a in shown.context["actions"]][:2] == ["confirm-receipt", "verify-identity"]
    confirmed = officer.post(step(ccpa.pk, "confirm-receipt"), follow=True)
    assert told(confirmed) == [f"DSR-{ccpa.pk}: receipt confirmed"]
    assert "answered" in text(confirmed).split("Confirm receipt", 1)[1].split("Respond", 1)[0]
    withdrawn = officer.post(step(ccpa.pk, "withdraw"), {"reason": "the requester phoned"}, follow=True)
    assert told(withdrawn) == [f"DSR-{ccpa.pk}: withdrawn by the requester"]
    assert actions(DataSubjectRequest.objects.get(pk=ccpa.pk))[-1] == "data_subject_request.withdrawn"


def test_deadlines_are_shown_in_the_request_zone_with_days_left_or_overdue(
    people: dict[str, Any], officer: Client
) -> None:
    now = timezone.now()
    late = receive(people, "access", received_at=now - timedelta(days=40), tz="Asia/Tokyo")
    fresh = receive(people, "know", regime="ccpa", received_at=now - timedelta(hours=1), tz="America/New_York")
    listing = text(officer.get(LIST))
    # The list: the zone in its own column, then the deadline's date and the days left (two lines).
    assert re.search(r"Asia/Tokyo due \d+ \w+ \d{4}, 23:59 \d+ days? overdue", listing), listing
    assert re.search(r"America/New_York confirm receipt: due \d+ \w+ \d{4}, 23:59 \d+ days left", listing)
    detail = text(officer.get(page(fresh.pk)))
    assert re.search(r"Respond due \d+ \w+ \d{4}, 23:59 America/New_York — 4[4-5] days left", detail), detail
    assert 'class="dsr-late"' in officer.get(page(late.pk)).content.decode()


def test_a_legal_hold_shows_on_the_confirmation_page_and_nothing_is_erased(
    people: dict[str, Any], officer: Client
) -> None:
    contacts = planted_version(people, "contacts")
    hold = legal_hold_place(actor=people["compliance_officer"], project=people["project"], reason="litigation 17")
    request = searched(people)
    confirm = officer.get(f"{LIST}{request.pk}/erase/")
    assert f"Erasure refused: legal hold {hold.pk} on project assistant is active (litigation 17)" in text(confirm)
    assert "erase-confirm" not in confirm.content.decode()
    posted = officer.post(f"{LIST}{request.pk}/erase/", {"reference": f"DSR-{request.pk}", "plan": "x" * 64})
    assert posted.status_code == 200 and "Erasure refused" in text(posted)
    assert DatasetVersion.objects.get(pk=contacts.pk).erased_at is None
    assert DataSubjectRequest.objects.get(pk=request.pk).state == RequestState.SEARCHED


def test_an_erasure_whose_plan_changed_since_the_page_is_refused(people: dict[str, Any], officer: Client) -> None:
    planted_version(people, "contacts")
    request = searched(people)
    shown = officer.get(f"{LIST}{request.pk}/erase/")
    digest = shown.context["plan"].digest
    orders = planted_version(people, "orders", [{"text": f"order 2 for {ANA}"}, {"text": "order 3"}])
    before = Entry.objects.count()
    refused = officer.post(f"{LIST}{request.pk}/erase/", {"reference": f"DSR-{request.pk}", "plan": digest})
    assert refused.status_code == 200
    assert "no longer the summary that was confirmed" in " ".join(told(refused))
    assert [c.version.pk for c in refused.context["plan"].versions][-1] == orders.pk  # the new list, to confirm again
    assert Entry.objects.count() == before and not DatasetVersion.objects.filter(erased_at__isnull=False).exists()
    with pytest.raises(Conflict, match="no longer the summary"):
        dsr_erase(actor=people["compliance_officer"], request=request, confirmed_plan=digest)


def test_nothing_found_is_said_and_the_erasure_is_refused_as_a_message(people: dict[str, Any], officer: Client) -> None:
    request = searched(people, identifiers=[{"kind": "email", "value": "nobody@example.org"}])
    shown = officer.get(page(request.pk))
    assert "erase" not in [a["name"] for a in shown.context["actions"]]
    assert "State Searched: nothing found; complete the request" in text(shown)
    refused = officer.get(f"{LIST}{request.pk}/erase/", follow=True)
    assert told(refused) == [f"DSR-{request.pk}: erasure refused: no dataset version, incident nor transcript of "
                             "project assistant holds this person; nothing erased"]  # fmt: skip


# --- who sees what -------------------------------------------------------------------------------


def test_an_auditor_reads_every_page_without_buttons_and_a_forced_post_changes_nothing(
    people: dict[str, Any], auditor: Client, security_events: list[dict[str, Any]]
) -> None:
    planted_version(people, "contacts")
    request = searched(people)
    shown = auditor.get(page(request.pk))
    assert shown.status_code == 200 and shown.context["actions"] == []
    html = shown.content.decode()
    assert "Read only: actions on the requests of assistant are for its compliance officers." in text(shown)
    assert "step-" not in html and "<form" not in html.split('id="content-main"', 1)[1]
    assert "What the search found" in text(shown)
    before = Entry.objects.count()
    forced = auditor.post(step(request.pk, "search"), follow=True)
    assert told(forced) == [f"DSR-{request.pk}: searching for a data subject needs the compliance_officer role in "
                            "project assistant"]  # fmt: skip
    erase = auditor.get(f"{LIST}{request.pk}/erase/", follow=True)
    assert "preparing an erasure needs the compliance_officer role" in told(erase)[0]
    package = auditor.post(step(request.pk, "access-package"), follow=True)
    assert "erasure or delete" not in told(package)[0] and "needs the compliance_officer role" in told(package)[0]
    assert Entry.objects.count() == before
    assert [e["reason"] for e in security_events if e["event"] == "authz.denied"][-3:] == ["permission_denied"] * 3


def test_other_projects_requests_and_unknown_steps_are_not_found(people: dict[str, Any], officer: Client) -> None:
    from django.contrib.auth import get_user_model

    from governance.roles import Role
    from governance.services import project_create, project_role_grant

    request = receive(people)
    assert officer.post(step(request.pk, "teleport")).status_code == 404
    assert officer.get(step(request.pk, "search")).status_code == 302  # a step is a POST; a GET goes to the page
    other = project_create(actor=people["system"], slug="other", name="Other")
    stranger = get_user_model().objects.create_user(username="other-officer")
    project_role_grant(actor=people["system"], project=other, user=stranger, role=Role.COMPLIANCE_OFFICER, reason="t")
    client = Client()
    admin_login(client, stranger)
    assert client.post(step(request.pk, "search")).status_code == 404
    assert client.get(f"{LIST}{request.pk}/erase/").status_code == 404
    assert client.get(page(request.pk)).status_code == 302  # Django's "does not exist" redirect to the index


def test_the_model_review_close_page_is_an_admin_page(people: dict[str, Any], officer: Client) -> None:
    contacts = planted_version(people, "contacts")
    model_version, _ = trained_and_deployed(people, contacts)
    request = dsr_erase(actor=people["compliance_officer"], request=searched(people))
    review = ModelReview.objects.get(request=request)
    form = officer.post("/admin/privacy/modelreview/", {"action": "close_reviews", "_selected_action": [review.pk]})
    assert form.status_code == 200 and f"{model_version} (review {review.pk}, after request DSR-{request.pk})" in text(
        form
    )
    assert 'id="site-name"' in form.content.decode()  # the admin's own frame, not a bare page


def test_describe_counts_days_in_the_request_zone() -> None:
    due = datetime(2027, 1, 12, 23, 59, 59, 999999, tzinfo=ZoneInfo("Europe/Berlin"))
    berlin = "due 12 Jan 2027, 23:59 Europe/Berlin — "

    def said(now: datetime, answered_at: datetime | None = None, tz: str = "Europe/Berlin") -> str:
        return describe(due, tz, now, answered_at=answered_at)

    def at(*args: int) -> datetime:
        return datetime(*args, tzinfo=UTC)  # type: ignore[misc]

    assert said(at(2027, 1, 8, 12)) == berlin + "4 days left"
    assert said(at(2027, 1, 11, 23, 30)) == berlin + "due today"  # 00:30 on the 12th in Berlin
    assert said(at(2027, 1, 12, 23, 30)) == berlin + "1 day overdue"
    assert said(at(2027, 1, 15, 12)) == berlin + "3 days overdue"
    assert said(at(2027, 1, 8, 12), tz="America/New_York") == "due 12 Jan 2027, 17:59 America/New_York — 4 days left"
    assert said(at(2027, 1, 20), at(2027, 1, 10, 9)) == berlin + "answered 2 days early"
    assert said(at(2027, 1, 20), at(2027, 1, 12, 22)) == berlin + "answered on the last day"
    assert said(at(2027, 1, 20), at(2027, 1, 12, 23)) == berlin + "answered 1 day late"
