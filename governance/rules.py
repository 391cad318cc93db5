"""Rules of approval that change nothing: who may request, separation of duties, evidence, which
slots are open, and how a rule or an outcome reads in words.

The services apply them inside their transactions; a refusal is a ``PolicyViolation`` (422) whose
message names the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from audits.ledger.services import Subject
from common.errors import DomainError
from governance.roles import Role

# Who may open a request in a project.
REQUESTER_ROLES = {Role.ML_ENGINEER, Role.DATA_STEWARD, Role.PLATFORM_ADMIN}


class PolicyViolation(DomainError):
    """The request breaks a rule of the policy (422); the message names the rule."""

    status_code = 422


# Refusals under separation of duties, which the ledger records (``separation_of_duties.refused``)
# whatever refused them: a decision, a break-glass approval or the review of one.
SEPARATION_OF_DUTIES_CODES = ("self_approval", "already_decided", "self_review")


def approval_subject(request: Any) -> Subject:
    """The ledger's subject of an approval entry: the request's subject, at the digest it binds."""
    return Subject(request.subject_type, request.subject_id, request.subject_digest)


def refuse_own_party(actor: Any, request: Any, parties: dict[int, int], authors: list[int], how: str = "") -> None:
    """Separation of duties: nobody decides on a request that they (or their service account, or
    its owner) submitted, nor on a subject they made."""
    mine = parties[actor.pk]
    if mine == parties[request.requester_id]:
        raise PolicyViolation(
            "self_approval",
            f"separation of duties: {how}a requester never decides on their own request (a service account "
            "and its owner count as one person)",
        )
    if any(parties[author] == mine for author in authors):
        raise PolicyViolation(
            "self_approval",
            f"separation of duties: {how}whoever made the {request.subject_type} never decides on it "
            "(a service account and its owner count as one person)",
        )


def evidence_or_raise(rule: dict[str, Any], kind: str, obj: Any) -> list[dict[str, Any]]:
    """The outcome of each evidence check of ``rule`` on ``obj``; the first that fails is refused."""
    from governance.evidence import evaluate

    outcomes = evaluate(tuple(rule["evidence"]), kind, obj)
    missing = [o for o in outcomes if not o["holds"]]
    if missing:
        first = missing[0]
        raise PolicyViolation("evidence_missing", f"evidence {first['check']!r} does not hold: {first['detail']}")
    return outcomes


# --- Slots ---------------------------------------------------------------------------------------
# The decision service and the pages that ask "may this person decide?" count slots the same way.


def slots_filled(decisions: Iterable[Any]) -> dict[str, int]:
    """How many approvals each role has given so far; a rejection fills no slot."""
    filled: dict[str, int] = {}
    for decision in decisions:
        if decision.decision == "approve":
            filled[decision.role] = filled.get(decision.role, 0) + 1
    return filled


def open_slot_roles(
    slots: list[dict[str, Any]], filled: dict[str, int], held: Iterable[str] | None = None
) -> list[str]:
    """The roles of ``slots``, in the rule's order, still short of their count (only those in
    ``held``, the roles a would-be approver holds, when given)."""
    mine = None if held is None else set(held)
    return [s["role"] for s in slots if (mine is None or s["role"] in mine) and filled.get(s["role"], 0) < s["count"]]


# --- Words ---------------------------------------------------------------------------------------
# What approvers read: a rule, a slot and an outcome in plain words rather than the policy's JSON.

_ROLE_WORDS = {"ml_engineer": "ML engineer", "break_glass": "break-glass"}
_PARAM_WORDS = {"max_age_days": "within {} days", "profile": "{} profile"}


def role_in_words(role: str) -> str:
    """``data_steward`` -> ``data steward``."""
    return _ROLE_WORDS.get(role, role.replace("_", " "))


def _with_article(noun: str) -> str:
    # "an ML engineer": the letter M is read "em".
    return ("an " if noun[:1].lower() in "aeiou" or noun.startswith("ML") else "a ") + noun


def _joined(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def slot_in_words(role: str, count: int) -> str:
    """``(data_steward, 1)`` -> ``a data steward``; ``(ml_engineer, 2)`` -> ``2 ML engineers``."""
    words = role_in_words(role)
    return _with_article(words) if count == 1 else f"{count} {words}s"


def evidence_in_words(item: str | dict[str, Any]) -> str:
    """``training_data_approved`` -> ``training data approved``; a check with parameters names
    them: ``security scan passed (baseline profile, within 30 days)``."""
    if isinstance(item, str):
        return item.replace("_", " ")
    params = [
        _PARAM_WORDS.get(key, key.replace("_", " ") + " {}").format(value)
        for key, value in item.items()
        if key != "check"
    ]
    name = str(item["check"]).replace("_", " ")
    return f"{name} ({', '.join(params)})" if params else name


def rule_in_words(rule: dict[str, Any]) -> str:
    """A request's rule (``Rule.describe()``, as stored with the request) in one sentence:
    ``2 approvals: a data steward and a compliance officer; evidence: training data approved;
    expires after 30 days``."""
    if rule.get("thresholds"):
        return monitor_rule_in_words(rule)
    slots = rule.get("approvals", [])
    total = sum(slot["count"] for slot in slots)
    who = _joined([slot_in_words(slot["role"], slot["count"]) for slot in slots]) if slots else "nobody"
    evidence = ", ".join(evidence_in_words(item) for item in rule.get("evidence") or []) or "none"
    days = rule.get("expires_after_days")
    expiry = f"expires after {days} day{'s' if days != 1 else ''}" if days else "does not expire"
    return f"{total} approval{'s' if total != 1 else ''}: {who}; evidence: {evidence}; {expiry}"


def monitor_rule_in_words(rule: dict[str, Any]) -> str:
    """A monitoring rule (``deployment.monitor``) in one sentence: ``per 60-minute window of at
    least 20 requests: error rate above 0.1, ...; a crossing opens a review, notifies platform
    admins and pauses the deployment``."""
    bounds = dict(rule["thresholds"])
    least = [f"{bounds.pop(key)} {what}" for key, what in (("min_requests", "requests"), ("min_ratings", "ratings"))
             if key in bounds]  # fmt: skip
    said = ", ".join(f"{metric.replace('_', ' ')} above {bound:g}" for metric, bound in sorted(bounds.items()))
    breach = rule.get("on_breach") or {}
    acts = ["opens a review"]
    if breach.get("notify"):
        acts.append("notifies " + _joined([f"{role_in_words(role)}s" for role in breach["notify"]]))
    acts.append("pauses the deployment" if breach.get("pause") else "leaves the deployment serving")
    minutes = int(rule.get("window_s", 3600)) // 60
    window = f"per {minutes}-minute window" + (f" of at least {' and '.join(least)}" if least else "")
    return f"{window}: {said}; a crossing {_joined(acts)}"


def open_slots_in_words(slots: list[dict[str, Any]], filled: dict[str, int]) -> str:
    """``the compliance officer's slot is still open``, or several: ``the data steward's and the
    compliance officer's slots are still open``; ``2 more ML engineers' slots are still open``."""
    parts, count = [], 0
    for slot in slots:
        missing = slot["count"] - filled.get(slot["role"], 0)
        if missing <= 0:
            continue
        count += missing
        words = role_in_words(slot["role"])
        parts.append(f"the {words}'s" if missing == 1 else f"{missing} more {words}s'")
    if not parts:
        return "no slot is open"
    return f"{_joined(parts)} slot{'s are' if count > 1 else ' is'} still open"


def outcome_in_words(request: Any) -> str:
    """What a decision just did to ``request`` (its state and decisions as the service left
    them), as the decider should read it: approved, rejected, or one slot filled of several."""
    state = request.state
    if state == "approved":
        return "Approved: every slot is filled."
    if state == "rejected":
        return "Rejected: the request is closed."
    filled = slots_filled(request.decisions.all())
    return f"Your approval is recorded; {open_slots_in_words(request.rule['approvals'], filled)}."
