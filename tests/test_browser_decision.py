"""A compliance officer decides on the decision page, in a real browser (Chromium driven by
Playwright against the live server).

The officer signs in for the first time (password, then an authenticator), finds two requests on
the home page under "Decisions waiting for me", and opens each: the rule in words, the slots, the
evidence as it stands now and the subject's personal-data summary. On the first, whose steward's
slot is filled, the officer's approval approves it; on the second, nobody's slot is filled yet, so
the approval fills the officer's slot and the page says the steward's stays open. The steward
then signs in, finds that request waiting on their home page and fills the last slot. The
database and the ledger then say what the pages said, and the inbox lists both requests by what
they ask. Screenshots and accessibility checks of every page:
tests/browser.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from audits.ledger.models import Entry
from governance.models import ApprovalDecision, ApprovalRequest, ApprovalState
from governance.services import approval_request_decide
from tests.browser import PASSWORD, browser, require_chromium, sign_in_first_time
from tests.decisions import training_request

RULE = "2 approvals: a data steward and a compliance officer; evidence: personal data reviewed; expires after 90 days"
LAST_SLOT = "the purpose matches the record of processing"
FIRST_SLOT = "no personal data in the scan; the steward still has to look"
STEWARD_SLOT = "looked at the records myself: no personal data"

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.one_pass("embedded")]


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()  # before the test builds anything


def test_an_officer_decides_on_the_decision_page(people: dict[str, Any], live_server: Any) -> None:
    from playwright.sync_api import expect

    officer, steward = people["compliance_officer"], people["data_steward"]
    for person in (officer, steward):
        person.set_password(PASSWORD)
        person.save()
    steward_done = training_request(people, risk_tier="high")
    approval_request_decide(
        actor=people["data_steward"], request_id=steward_done.pk, decision="approve", reason="clean data"
    )
    untouched = training_request(people, risk_tier="high")
    filled = ApprovalDecision.objects.get(request=steward_done)
    pages_of = {r.pk: f"/admin/governance/approvalrequest/{r.pk}/change/" for r in (steward_done, untouched)}

    with browser(live_server.url, "decision-page") as pages:
        page = pages.page
        sign_in_first_time(pages, officer.username)  # screenshots: login, mfa-enrol, mfa-enrolled, home
        waiting = page.locator("#home-decisions")
        expect(waiting.locator("h2")).to_have_text("Decisions waiting for me (2)")
        expect(waiting.locator(f"a[href='{pages_of[steward_done.pk]}']")).to_be_visible()
        expect(waiting.locator(f"a[href='{pages_of[untouched.pk]}']")).to_be_visible()

        # 1. The request whose steward's slot is filled: the officer's approval approves it.
        waiting.locator(f"a[href='{pages_of[steward_done.pk]}']").click()
        page.wait_for_selector("#decision-form")
        expect(page.locator("#rule-words")).to_contain_text(RULE)
        expect(page.locator("#request-digest")).to_have_text(steward_done.subject_digest)
        steward_slot = page.locator("#slots tr.slot-filled")
        expect(steward_slot).to_contain_text("data-steward")
        expect(steward_slot).to_contain_text("clean data")
        expect(steward_slot.locator(f"a[href='/admin/ledger/entry/{filled.ledger_index}/change/']")).to_be_visible()
        expect(page.locator("#slots tr.slot-open")).to_contain_text("open for compliance officer")
        expect(page.locator("#evidence tr.evidence-item")).to_contain_text("personal data reviewed")
        expect(page.locator("#evidence tr.evidence-item")).to_contain_text("holds")
        expect(page.locator("#subject-summary")).to_contain_text("personal data found")
        pages.shot("decision")
        page.emulate_media(color_scheme="dark")  # the admin follows the system's theme
        pages.shot("decision-dark")
        page.emulate_media(color_scheme="light")
        page.fill("#id_reason", LAST_SLOT)
        page.click("#approve-button")
        expect(page.locator("ul.messagelist")).to_have_text("Approved: every slot is filled.")
        expect(page.locator("#request-state")).to_have_text("Approved")
        expect(page.locator("#cannot-decide")).to_contain_text("the request is approved")
        pages.shot("approved")

        # 2. The untouched request: the officer fills one slot of two, and the page says which stays open.
        pages.goto("/admin/")
        expect(page.locator("#home-decisions h2")).to_have_text("Decisions waiting for me (1)")
        page.locator(f"#home-decisions a[href='{pages_of[untouched.pk]}']").click()
        page.wait_for_selector("#decision-form")
        expect(page.locator("#slots tr.slot-open")).to_have_count(2)
        page.fill("#id_reason", FIRST_SLOT)
        page.click("#approve-button")
        expect(page.locator("ul.messagelist")).to_have_text(
            "Your approval is recorded; the data steward's slot is still open."
        )
        expect(page.locator("#request-state")).to_have_text("Pending")
        expect(page.locator("#slots tr.slot-open")).to_contain_text("open for data steward")
        expect(page.locator("#cannot-decide")).to_contain_text("you have already decided")
        pages.shot("slot-filled")

        # 3. Nothing waits for the officer any more.
        pages.goto("/admin/")
        expect(page.locator("#home-decisions")).to_contain_text("Nothing waits for your decision.")
        pages.shot("home-after")

        # 4. Another decider, the steward, signs in and fills the last slot.
        page.click("#logout-form [type=submit]")
        expect(page.locator("#content h1")).to_have_text("Logged out")
        sign_in_first_time(pages, steward.username)  # screenshots: login, mfa-enrol, mfa-enrolled, home
        expect(page.locator("#home-decisions h2")).to_have_text("Decisions waiting for me (1)")
        page.locator(f"#home-decisions a[href='{pages_of[untouched.pk]}']").click()
        page.wait_for_selector("#decision-form")
        expect(page.locator("#slots tr.slot-filled")).to_contain_text(FIRST_SLOT)
        expect(page.locator("#decide")).to_contain_text("you would fill the data steward slot")
        page.fill("#id_reason", STEWARD_SLOT)
        page.click("#approve-button")
        expect(page.locator("ul.messagelist")).to_have_text("Approved: every slot is filled.")
        expect(page.locator("#request-state")).to_have_text("Approved")
        expect(page.locator("#slots tr.slot-open")).to_have_count(0)
        pages.shot("steward-approved")

        # 5. The inbox lists every request by what it asks, the subject by its own name.
        pages.goto("/admin/governance/approvalrequest/")
        expect(page.locator("#changelist")).to_contain_text("0 approval requests")  # none waits for the steward
        page.locator("#changelist-filter a[href='?waiting=all']").click()  # who may decide: All
        asks = page.locator("#result_list td.field-asks")
        expect(asks).to_have_count(2)
        for cell in asks.all():
            expect(cell).to_have_text(re.compile(r"^use for training: assistant/d\d+ v1$"))
        pages.shot("inbox")

    assert pages.names() == [
        "01-login.png", "02-mfa-enrol.png", "03-mfa-enrolled.png", "04-home.png", "05-decision.png",
        "06-decision-dark.png", "07-approved.png", "08-slot-filled.png", "09-home-after.png", "10-login.png",
        "11-mfa-enrol.png", "12-mfa-enrolled.png", "13-home.png", "14-steward-approved.png", "15-inbox.png",
    ]  # fmt: skip
    # What the pages said is what the database and the ledger hold.
    assert ApprovalRequest.objects.get(pk=steward_done.pk).state == ApprovalState.APPROVED
    assert ApprovalRequest.objects.get(pk=untouched.pk).state == ApprovalState.APPROVED
    for request, who, reason, action, filled in (
        (steward_done, officer, LAST_SLOT, "approval.approved", {"data_steward": 1, "compliance_officer": 1}),
        (untouched, officer, FIRST_SLOT, "approval.slot_filled", {"compliance_officer": 1}),
        (untouched, steward, STEWARD_SLOT, "approval.approved", {"data_steward": 1, "compliance_officer": 1}),
    ):
        decision = ApprovalDecision.objects.get(request=request, approver=who)
        role = "data_steward" if who == steward else "compliance_officer"
        assert (decision.role, decision.reason, decision.decision) == (role, reason, "approve")
        entry = json.loads(bytes(Entry.objects.get(index=decision.ledger_index).body))
        assert entry["action"] == action and entry["actor"]["name"] == who.username
        assert entry["payload"] == {
            "request": request.pk, "decision": "approve", "role": role, "reason": reason, "filled": filled,
            "state": ApprovalState.APPROVED if action == "approval.approved" else ApprovalState.PENDING,
        }  # fmt: skip
        assert entry["subject"] == {
            "type": "dataset_version", "id": request.subject_id, "digest": request.subject_digest,
        }  # fmt: skip
