"""An ML engineer's API token, made and revoked in a real browser: Chromium driven by Playwright
against the live server.

The engineer signs in for the first time (password, then enrolment of an authenticator), finds
the pages of their project on the admin's index, opens "API tokens", adds a token that expires in
30 days (a bad expiry first, which the page explains), and copies the token the page shows once.
They then ask for a fine-tune run (a GPU without its type first, which the form explains) and a
staging deployment on the admin's request pages, and find both, waiting for approval, in their
lists. With the browser closed, the token answers ``GET /api/v1/me`` through the live server; the
engineer signs in again (password and the authenticator's next code), revokes the token after
the confirmation page, and the same call answers 401. The ledger holds every change.
Screenshots and accessibility checks of every page: tests/browser.py.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from audits.ledger.models import Entry
from governance.models import ApiToken, ApprovalRequest
from serving.models import Deployment
from serving.tests.conftest import staging_policies  # noqa: F401  (staging asks for approved training data only)
from tests.browser import PASSWORD, Pages, browser, require_chromium, sign_in_first_time
from training.models import FineTuneRun
from training.tests.conftest import ready as ready_fixture  # noqa: F401  (fixture "ready": a base and a dataset version)

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.one_pass("scale")]

# The pages of the engineer's work the index must offer (changelists of their project's rows).
ENGINEER_PAGES = {
    "/admin/governance/approvalrequest/": "Approval requests",
    "/admin/training/finetunerun/": "Fine-tune runs",
    "/admin/checks/securityscan/": "Security scans",
    "/admin/checks/biasevaluation/": "Bias evaluations",
    "/admin/serving/deployment/": "Deployments",
    "/admin/registry/model/": "Models",
    "/admin/registry/modelversion/": "Model versions",
    "/admin/registry/dataset/": "Datasets",
    "/admin/governance/apitoken/": "API tokens",
}
TOKENS = "/admin/governance/apitoken/"


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()  # before the test builds anything


def _me(base_url: str, token: str) -> int:
    """The status of ``GET /api/v1/me`` with ``token``, through the live server."""
    request = urllib.request.Request(f"{base_url}/api/v1/me", headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _sign_in_again(pages: Pages, username: str, key: bytes, last_step: int) -> None:
    """Password, then the authenticator's next code: a code is good once, so the one enrolment
    used is not offered again (as a person waits for the app's next one)."""
    page = pages.page
    pages.goto("/admin/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form#login-form [type=submit]")
    page.wait_for_selector("#mfa-verify-form")
    pages.shot("mfa-verify")
    while int(time.time()) // 30 <= last_step:
        time.sleep(0.5)
    page.fill("input[name=token]", f"{totp(key, step=30, digits=6):06d}")
    page.click("#mfa-verify-form [type=submit]")
    page.wait_for_selector("#site-name")


def _request_a_run(pages: Pages, ready: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page = pages.page
    pages.goto("/admin/training/finetunerun/")
    page.click("a.addlink")
    page.wait_for_selector("#request-form")
    page.fill("input[name=name]", "support-tone")
    page.select_option("select[name=base]", str(ready["base"].pk))
    page.check(f"input[name=dataset_versions][value='{ready['version'].pk}']")
    page.fill("input[name=learning_rate]", "0.005")
    page.fill("input[name=gpu_count]", "1")  # a GPU, but no type: the service's refusal, on the form
    page.fill("textarea[name=comment]", "a friendlier tone for the support assistant")
    page.click("#request-submit")
    expect(page.locator(".errornote")).to_contain_text("nothing was requested")
    expect(page.locator(".field-gpu_type .errorlist")).to_contain_text("this platform has no GPU type")
    pages.shot("run-refused")
    page.fill("input[name=gpu_count]", "0")
    page.click("#request-submit")
    expect(page.locator("ul.messagelist")).to_contain_text("waits for 1 ml engineer")
    pages.shot("run-requested")
    pages.goto("/admin/training/finetunerun/")
    expect(page.locator("#result_list tbody tr", has_text="support-tone")).to_contain_text("requested")
    pages.shot("runs")


def _request_a_deployment(pages: Pages, ready: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page = pages.page
    pages.goto("/admin/serving/deployment/")
    page.click("a.addlink")
    page.wait_for_selector("#request-form")
    page.fill("input[name=name]", "support-assistant")
    page.select_option("select[name=model_version]", str(ready["base"].pk))
    page.select_option("select[name=environment]", "staging")
    pages.shot("deployment-form")
    page.click("#request-submit")
    expect(page.locator("ul.messagelist")).to_contain_text("waits for 1 platform admin")
    pages.shot("deployment-requested")
    pages.goto("/admin/serving/deployment/")
    expect(page.locator("#result_list tbody tr", has_text="support-assistant")).to_contain_text("requested")
    pages.shot("deployments")


@pytest.mark.usefixtures("staging_policies")
def test_ml_engineer_signs_in_makes_a_token_requests_work_and_revokes_the_token(
    ready: dict[str, Any], live_server: Any
) -> None:
    from playwright.sync_api import expect

    engineer = ready["ml_engineer"]
    engineer.refresh_from_db()
    assert engineer.is_staff  # the role grant made them staff
    engineer.set_password(PASSWORD)
    engineer.save()
    username, start = engineer.username, Entry.objects.count()

    with browser(live_server.url, "ml-engineer-tokens") as pages:
        page = pages.page
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)

        # 1. The first sign-in, with enrolment of an authenticator; the index offers their pages.
        sign_in_first_time(pages, username)
        for href in ENGINEER_PAGES:
            expect(page.locator(f"a[href='{href}']").first).to_be_visible()
        expect(page.locator("a[href='/admin/ledger/entry/']")).to_have_count(0)  # not a reader of the ledger
        page.locator("a[href='/admin/registry/dataset/']").first.click()
        expect(page.locator("#result_list")).to_contain_text("tickets")
        pages.shot("datasets")

        # 2. API tokens: none yet; add one, a bad expiry first.
        pages.goto(TOKENS)
        page.wait_for_selector("#tokens-intro")
        expect(page.locator("h1")).to_have_text("API tokens")
        pages.shot("tokens-none")
        page.click("a.addlink")
        page.wait_for_selector("#apitoken-form")
        expect(page.locator("input[name=expires_in_days]")).to_have_value("90")
        page.fill("input[name=name]", "laptop")
        page.fill("input[name=expires_in_days]", "400")
        page.click("#create-token")
        expect(page.locator(".errorlist")).to_contain_text("At most 365 days (API_TOKEN_MAX_DAYS).")
        expect(page.locator(".errornote")).to_contain_text("nothing was created")
        pages.shot("add-refused")
        page.fill("input[name=expires_in_days]", "30")
        page.click("#create-token")

        # 3. The token, shown once, copied with the button.
        page.wait_for_selector("#api-token")
        expect(page.locator("#token-shown-once")).to_contain_text("it will not be shown again")
        shown = page.inner_text("#api-token").strip()
        page.click("#copy-token")
        expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
        copied = page.evaluate("navigator.clipboard.readText()")
        pages.shot("token-shown-once")
        page.click("#back-to-tokens")
        row = page.locator("#result_list tbody tr", has_text="laptop")
        expect(row.locator(".token-state")).to_have_text("live")
        expect(page.locator("#result_list")).not_to_contain_text(shown)  # listed, never shown again
        pages.shot("tokens-live")

        # 4. A fine-tune run and a deployment, asked for in the browser, waiting for approval.
        _request_a_run(pages, ready)
        _request_a_deployment(pages, ready)

    assert copied == shown and shown.startswith("gov_")
    run, deployment = FineTuneRun.objects.get(), Deployment.objects.get()
    assert run.requested_by == engineer and deployment.requested_by == engineer and run.gpu_count == 0
    assert set(ApprovalRequest.objects.filter(state="pending", requester=engineer).values_list("action", flat=True)) == {
        "fine_tune_run.execute", "deployment.deploy",
    }  # fmt: skip
    token_row = ApiToken.objects.get(user=engineer)
    days = (token_row.expires_at - timezone.now()).total_seconds() / 86400
    assert token_row.name == "laptop" and 29.9 < days <= 30
    assert _me(live_server.url, copied) == 200
    device = TOTPDevice.objects.get(user=engineer, confirmed=True)
    key, last_step = bytes.fromhex(device.key), device.last_t

    with browser(live_server.url, "ml-engineer-tokens-revoke") as pages:
        page = pages.page
        # 5. Back the next day: the second factor, then revoke after the confirmation page.
        _sign_in_again(pages, username, key, last_step)
        pages.goto(TOKENS)
        row = page.locator("#result_list tbody tr", has_text="laptop")
        expect(row.locator("td.field-last_used")).not_to_have_text("-")  # the call above used it
        row.locator("a.revoke-link").click()
        page.wait_for_selector("#revoke-form")
        expect(page.locator("#content-main")).to_contain_text(token_row.prefix)
        pages.shot("revoke-confirm")
        page.click("#confirm-revoke")
        expect(page.locator("ul.messagelist")).to_contain_text("Revoked token 'laptop'")
        expect(row.locator(".token-state")).to_have_text("revoked")
        pages.shot("tokens-revoked")

    assert _me(live_server.url, copied) == 401
    entries = [json.loads(bytes(b)) for b in Entry.objects.filter(index__gte=start).values_list("body", flat=True)]
    kinds = ("api_token.", "fine_tune_run.", "deployment.", "approval.")
    assert [
        (e["action"], e["actor"]["name"], e["subject"]["id"]) for e in entries if e["action"].startswith(kinds)
    ] == [
        ("api_token.created", username, token_row.prefix),
        ("fine_tune_run.requested", username, str(run.pk)),
        ("approval.requested", username, str(run.pk)),
        ("deployment.requested", username, str(deployment.pk)),
        ("approval.requested", username, str(deployment.pk)),
        ("api_token.revoked", username, token_row.prefix),
    ]
    assert copied not in json.dumps(entries)  # the ledger never holds the token
