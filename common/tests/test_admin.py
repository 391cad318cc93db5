"""The one admin action helper (``common.admin.call_service_for_each``): what it tells the user
and what it logs, on stand-in objects. The apps' actions are tested through their admin pages."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages import constants
from django.contrib.messages.storage.cookie import CookieStorage
from django.test import RequestFactory

from common.admin import DONE, REFUSED, call_service_for_each
from common.errors import Conflict, DomainError, PermissionDenied

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)


def _request() -> Any:
    request = RequestFactory().post("/admin/app/thing/")
    request.user = AnonymousUser()
    request._messages = CookieStorage(request)
    return request


def _told(request: Any) -> list[tuple[str, str]]:
    return [(constants.DEFAULT_TAGS[m.level], m.message) for m in request._messages]


def _things(*pks: int) -> list[Any]:
    return [SimpleNamespace(pk=pk) for pk in pks]


def test_each_object_is_told_and_refusals_follow_and_are_logged(security_events: list[dict[str, Any]]) -> None:
    def cancel(thing: Any) -> Any:
        if thing.pk == 2:
            raise Conflict("closed", "thing 2 is closed")
        if thing.pk == 3:
            raise DomainError("invalid_input", "thing 3 is malformed")  # a 400: the caller's rights are not at stake
        return thing

    request = _request()
    tally = call_service_for_each(
        request, _things(1, 2, 3, 4), cancel, name=lambda t: f"thing {t.pk}",
        refusal_fields=lambda t: {"thing": t.pk}, each={DONE: "cancelled"},
    )  # fmt: skip
    assert tally == {DONE: 2, REFUSED: 2}
    assert _told(request) == [
        ("success", "thing 1: cancelled"), ("success", "thing 4: cancelled"),
        ("error", "thing 2: thing 2 is closed"), ("error", "thing 3: thing 3 is malformed"),
    ]  # fmt: skip
    assert [(e["event"], e["reason"], e["status"], e["thing"], e["path"]) for e in security_events] == [
        ("request.denied", "closed", 409, 2, "/admin/app/thing/")
    ]


def test_outcomes_are_counted_as_the_service_reports_them(security_events: list[dict[str, Any]]) -> None:
    def decide(thing: Any) -> str:
        if thing.pk == 9:
            raise PermissionDenied("not_an_approver", "you hold no slot")
        return "pending" if thing.pk % 2 else "approved"

    def run(*pks: int) -> list[tuple[str, str]]:
        request = _request()
        call_service_for_each(
            request, _things(*pks), decide, name=lambda t: f"#{t.pk}", refusal_event="thing.decision.denied",
            refusal_fields=lambda t: {"thing": t.pk}, outcome=lambda state: state,
            counted={"approved": "Approved {count}.", "pending": "Filled a slot on {count}; still pending."},
            nothing="Nothing decided.",
        )  # fmt: skip
        return _told(request)

    assert run(1, 2, 3, 9) == [
        ("success", "Approved 1."), ("success", "Filled a slot on 2; still pending."),
        ("error", "#9: you hold no slot"),
    ]  # fmt: skip
    assert run() == [("info", "Nothing decided.")]
    assert run(9) == [("error", "#9: you hold no slot")]  # a refusal is an answer: no "nothing" besides it
    assert [(e["event"], e["status"]) for e in security_events] == [("thing.decision.denied", 403)] * 2


def test_an_outcome_told_nowhere_is_counted_and_a_text_can_come_from_the_result() -> None:
    request = _request()
    tally = call_service_for_each(
        request, _things(1, 2), lambda t: t.pk == 1, name=lambda t: f"token {t.pk}",
        outcome=lambda revoked: "revoked" if revoked else "unchanged",
        each={"revoked": lambda revoked: f"revoked ({revoked})"}, nothing="No token revoked.",
    )  # fmt: skip
    assert tally == {"revoked": 1, "unchanged": 1}
    assert _told(request) == [("success", "token 1: revoked (True)")]
    request = _request()
    call_service_for_each(request, _things(2), lambda t: False, outcome=lambda r: "unchanged", nothing="No change.")
    assert _told(request) == [("info", "No change.")]
