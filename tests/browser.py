"""What every browser walk through the admin shares: Debian's Chromium driven by Playwright, a
full-page screenshot of each page kept under ``var/test-artifacts/browser/<walk>/`` (git-ignored,
to see what the person saw), and axe-core's accessibility check of each page screenshotted.

A walk collects the serious and critical violations axe reports and ``browser`` fails at the end
naming each (rule, page, element), so one run shows them all. Chromium is Debian's
(``make test`` installs it, bin/system-packages): Playwright's own browser download does not work
here. While a walk's browser is open, Playwright's event loop runs in the test's thread and Django's
ORM refuses calls from it: a walk reads the database before and after, not during.
"""

from __future__ import annotations

import re
from base64 import b32decode
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from django_otp.oath import totp

from conftest import require_tool

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts" / "browser"
PASSWORD = "correct horse battery staple"
TIMEOUT_MS = 15_000
SEVERE = ("serious", "critical")


def require_chromium() -> None:
    require_tool(CHROMIUM.exists(), f"Debian's Chromium at {CHROMIUM}")


class Pages:
    """The browser tab, a numbered full-page screenshot of each page it shows, and what axe-core
    found wrong on each of them."""

    def __init__(self, page: Any, base_url: str, folder: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.folder = folder
        self.shots: list[Path] = []
        self.violations: list[str] = []

    def goto(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def shot(self, name: str, *, accessible: bool = True) -> None:
        """Keep a screenshot of the page as it is now and check it with axe-core (serious and
        critical violations are reported when the walk ends)."""
        path = self.folder / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        if accessible:
            self.check_accessibility(name)

    def check_accessibility(self, name: str) -> None:
        from axe_playwright_python.sync_playwright import Axe

        results = Axe().run(self.page)
        for violation in results.response["violations"]:
            if violation.get("impact") in SEVERE:
                targets = [" ".join(map(str, node.get("target", []))) for node in violation.get("nodes", [])][:3]
                self.violations.append(
                    f"{name} ({self.page.url}): {violation['impact']} {violation['id']}: {violation['help']} "
                    f"at {', '.join(targets)}"
                )

    def names(self) -> list[str]:
        return [shot.name for shot in self.shots]


@contextmanager
def browser(base_url: str, walk: str, *, viewport_width: int = 1280) -> Iterator[Pages]:
    """Chromium with one tab at ``viewport_width`` px; screenshots go to ``ARTIFACTS/walk``. On
    leaving, fails if axe-core found a serious or critical violation on a page the walk showed."""
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    expect.set_options(timeout=TIMEOUT_MS)
    folder = ARTIFACTS / walk
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    print(f"\nbrowser screenshots: {folder}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        context = chromium.new_context(viewport={"width": viewport_width, "height": 900}, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        pages = Pages(context.new_page(), base_url, folder)
        try:
            yield pages
        except BaseException:
            with suppress(Exception):  # the page the failure left behind, if the browser still answers
                pages.shot("failed", accessible=False)
            raise
        finally:
            context.close()
            chromium.close()
    assert not pages.violations, "axe-core found serious or critical violations:\n" + "\n".join(pages.violations)


def code_from(secret_shown: str) -> str:
    """What an authenticator app shows for the secret on the enrolment page (the device's
    defaults: 30 s steps, 6 digits)."""
    return f"{totp(b32decode(secret_shown.replace(' ', '')), step=30, digits=6):06d}"


def sign_in_first_time(pages: Pages, username: str, password: str = PASSWORD) -> None:
    """Password, then enrolment of an authenticator (a staff user's first sign-in), then the
    backup codes, then the admin's index. Screenshots: login, mfa-enrol, mfa-enrolled, home."""
    from playwright.sync_api import expect

    page = pages.page
    pages.goto("/admin/")
    page.wait_for_selector("form#login-form")
    pages.shot("login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form#login-form [type=submit]")
    page.wait_for_url(re.compile(r"/admin/mfa/enrol/"))
    secret = page.inner_text("#mfa-secret")
    assert page.inner_text("#mfa-otpauth-uri").startswith("otpauth://totp/")
    expect(page.locator("#mfa-qr svg")).to_be_visible()
    pages.shot("mfa-enrol")
    page.fill("input[name=token]", code_from(secret))
    page.click("#mfa-enrol-form [type=submit]")
    page.wait_for_selector("#mfa-backup-codes")
    assert page.locator("#mfa-backup-codes li").count() == 8
    pages.shot("mfa-enrolled")
    page.click("#mfa-continue")
    page.wait_for_selector("#site-name")
    pages.shot("home")
