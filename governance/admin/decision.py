"""The decision page of an approval request: what a decider needs on one page (the subject and
its digest, the rule in words, each slot, each evidence item as it stands now, the facts the
subject's app supplies, the history with its ledger entries) and, for a person who may decide
it now, the form that approves or rejects through ``approval_request_decide``, as the API does.
An approved request is first held against its subject as it is now: if the subject changed, the
approval lapses for good and the page says when and why.

A refusal of the service is shown on the page, with nothing changed; the success message says
what truly happened (approved, rejected, or one slot filled while others stay open).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ModelAdmin
from django.contrib.admin.utils import unquote
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from common.api import LEDGERED_TEXT_HELP
from common.errors import DomainError, NotFound
from common.security_log import refusal
from governance.evidence import evaluate
from governance.rules import evidence_in_words, outcome_in_words, role_in_words, rule_in_words
from governance.selectors import approval_get, approval_ledger_entries, approval_may_decide
from governance.services import approval_request_decide
from governance.services.approvals import approval_request_recheck
from governance.subjects import request_in_words, subject_summary, subject_type

TEMPLATE = "admin/governance/approvalrequest/decision.html"


class DecisionForm(forms.Form):
    # Left to the service to refuse when blank, so the page says what the API says.
    reason = forms.CharField(
        label="Reason", required=False, max_length=2000, help_text=LEDGERED_TEXT_HELP,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "placeholder": "why you approve or reject this request"}),
    )  # fmt: skip


def admin_href(request: HttpRequest, obj: Any) -> str:
    """The admin page of ``obj`` when the user may open it; empty otherwise (no link to a 403)."""
    try:
        model_admin = admin.site.get_model_admin(type(obj))
    except admin.sites.NotRegistered:
        return ""
    if not model_admin.has_view_permission(request, obj):
        return ""
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def ledger_href(request: HttpRequest, index: int | None) -> str:
    if index is None or not request.user.has_perm("ledger.view_entry"):
        return ""
    return reverse("admin:ledger_entry_change", args=[index])


def _slots(request: HttpRequest, approval: Any, decisions: list[Any]) -> list[dict[str, Any]]:
    """One row per slot of the rule: who filled it and when, or the role it is open for."""
    rows = []
    for slot in approval.rule["approvals"]:
        fills = [d for d in decisions if d.decision == "approve" and d.role == slot["role"]]
        for position in range(slot["count"]):
            fill = fills[position] if position < len(fills) else None
            rows.append({
                "role": role_in_words(slot["role"]), "decision": fill,
                "href": ledger_href(request, fill.ledger_index) if fill else "",
            })  # fmt: skip
    for fill in (d for d in decisions if d.role == "break_glass"):
        rows.append({"role": "break-glass", "decision": fill, "href": ledger_href(request, fill.ledger_index)})
    return rows


def _history_line(action: str, payload: dict[str, Any]) -> str:
    """What one ledger entry about the request says, in words."""
    role = role_in_words(str(payload.get("role", "")))
    lines = {
        "approval.requested": lambda: f"submitted; comment: {payload.get('comment') or 'none'}",
        "approval.slot_filled": lambda: f"approved as {role}: {payload.get('reason')}; the request stays pending",
        "approval.approved": lambda: f"approved as {role}: {payload.get('reason')}; every slot is filled",
        "approval.rejected": lambda: f"rejected as {role}: {payload.get('reason')}",
        "approval.withdrawn": lambda: f"withdrawn: {payload.get('reason') or 'no reason given'}",
        "approval.expired": lambda: "expired before every slot was filled",
        "approval.break_glass": lambda: (
            f"approved by break-glass: {payload.get('justification')}; review due {payload.get('review_due', '')[:16]}"
        ),
        "approval.break_glass_reviewed": lambda: (
            f"break-glass reviewed: {payload.get('outcome')}{' (late)' if payload.get('late') else ''}: "
            f"{payload.get('note')}"
        ),
        "separation_of_duties.refused": lambda: f"refused: {payload.get('message')}",
        "approval.lapsed": lambda: f"lapsed for good: {payload.get('reason')}",
    }
    return lines[action]() if action in lines else action


def _history(request: HttpRequest, approval: Any) -> list[dict[str, Any]]:
    rows = [
        {"time": entry["time"], "who": entry["actor"], "what": _history_line(entry["action"], entry["payload"]),
         "index": entry["index"], "href": ledger_href(request, entry["index"])}
        for entry in approval_ledger_entries(approval)
    ]  # fmt: skip
    if approval.state == "pending" and approval.expires_at is not None:
        rows.append({"time": approval.expires_at, "who": "", "what": "expires unless every slot is filled by then",
                     "index": None, "href": ""})  # fmt: skip
    return rows


def _subject(request: HttpRequest, approval: Any) -> dict[str, Any]:
    """The subject as it is now: its admin link, current digest, evidence and summary."""
    try:
        kind = subject_type(approval.subject_type)
    except DomainError as exc:
        return {"missing": exc.message, "evidence": [], "facts": []}
    obj = kind.get(approval.subject_id)
    if obj is None:
        return {"missing": f"no {approval.subject_type} {approval.subject_id} any more", "evidence": [], "facts": []}
    evidence = [
        {**outcome, "words": evidence_in_words(item)}
        for item, outcome in zip(approval.rule.get("evidence") or [], evaluate(
            tuple(approval.rule.get("evidence") or []), approval.subject_type, obj
        ), strict=True)
    ]  # fmt: skip
    return {
        "name": str(obj), "href": admin_href(request, obj), "digest": kind.digest(obj), "evidence": evidence,
        "facts": [
            {"fact": fact, "href": admin_href(request, fact.link) if fact.link is not None else ""}
            for fact in subject_summary(approval.subject_type, obj)
        ],
        "missing": "",
    }  # fmt: skip


def decision_context(request: HttpRequest, approval: Any, form: DecisionForm) -> dict[str, Any]:
    decisions = list(approval.decisions.all())
    subject = _subject(request, approval)
    may = approval_may_decide(user=request.user, request=approval)
    digest_current = subject.get("digest") == approval.subject_digest
    holds = all(item["holds"] for item in subject["evidence"])
    why_not_approve = ""
    if not digest_current:
        why_not_approve = "the subject changed since the request (its digest differs): it can only be rejected"
    elif not holds:
        why_not_approve = "some evidence does not hold now: approving is refused until it does"
    return {
        "approval": approval, "rule_words": rule_in_words(approval.rule), "slots": _slots(request, approval, decisions),
        "subject": subject, "digest_current": digest_current, "evidence_holds": holds,
        "history": _history(request, approval), "subject_words": approval.subject_type.replace("_", " "),
        "may": may, "why_not_approve": why_not_approve, "form": form, "now": timezone.now(),
        "context_words": ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(approval.context.items())),
    }  # fmt: skip


def decision_page(model_admin: ModelAdmin[Any], request: HttpRequest, object_id: str) -> HttpResponse:
    """GET shows the page; POST decides (``decision`` approve or reject, with a reason)."""
    try:
        pk = int(unquote(object_id))
        approval = approval_get(user=request.user, pk=pk)
    except (ValueError, NotFound):
        raise Http404("no such approval request") from None
    if not model_admin.has_view_permission(request, approval):
        raise Http404("no such approval request")
    if request.method != "POST" and approval_request_recheck(approval):
        approval = approval_get(user=request.user, pk=pk)  # its subject changed: it lapsed just now
    form = DecisionForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and not form.is_valid():
        messages.error(
            request, "Nothing was decided: " + "; ".join(e for errors in form.errors.values() for e in errors)
        )
    elif request.method == "POST":
        try:
            decided = approval_request_decide(
                actor=request.user, request_id=approval.pk, decision=request.POST.get("decision", ""),
                reason=form.cleaned_data["reason"],
            )  # fmt: skip
        except DomainError as exc:
            refusal(request, exc, event="approval.decision.denied", approval_request=approval.pk)
            messages.error(request, f"Nothing was decided: {exc.message}.")
            for field, problems in exc.fields.items():
                if field in form.fields:
                    form.add_error(field, "; ".join(map(str, problems)))
            approval = approval_get(user=request.user, pk=pk)  # as it is now (another may have decided)
        else:
            messages.success(request, outcome_in_words(decided))
            return HttpResponseRedirect(request.path)
    asks = request_in_words(approval.action, approval.subject_type, approval.subject_id)
    context = {
        **model_admin.admin_site.each_context(request), "opts": model_admin.opts,
        "title": f"Request #{approval.pk}: {asks}", **decision_context(request, approval, form),
    }  # fmt: skip
    return TemplateResponse(request, TEMPLATE, context)
