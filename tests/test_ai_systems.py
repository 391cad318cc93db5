"""The AI systems register: the classification rule branch by branch, the services with their
ledger entries and the real approval path, the API (its 400s and 404s) and the admin pages a
compliance officer and an ML engineer use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from audits.ledger.models import Entry
from common.errors import DomainError
from common.testing import admin_login
from governance.models import ApprovalRequest
from governance.roles import Role
from governance.services import (
    api_token_create,
    approval_request_decide,
    approval_request_withdraw,
    approval_requests_expire_due,
    project_create,
    project_role_grant,
)
from systems.models import AISystem, AISystemClassification
from systems.rules import QUESTIONS, answers_clean, classify
from systems.services import (
    ai_system_classification_create,
    ai_system_classification_submit,
    ai_system_register,
    ai_system_update,
)

NO = {q.id: False for q in QUESTIONS if q.kind == "yes_no"} | {"annex_iii_areas": [], "art_6_3_exception": "none"}


def answers(**given: Any) -> dict[str, Any]:
    return {**NO, **given}


def _payload(entry: Entry) -> dict[str, Any]:
    return json.loads(bytes(entry.body))["payload"]


def _actions(subject_type: str, subject_id: Any) -> list[str]:
    found = Entry.objects.filter(subject_type=subject_type, subject_id=str(subject_id)).order_by("index")
    return list(found.values_list("action", flat=True))


# The rule, branch by branch (no database).


@pytest.mark.parametrize(
    ("given", "expected", "article"),
    [
        ({}, "minimal", "Art. 95"),
        ({"social_scoring": True}, "prohibited", "Art. 5(1)(c)"),
        ({"realtime_remote_biometric_identification": True, "interacts_with_people": True}, "prohibited",
         "Art. 5(1)(h)"),
        ({"annex_iii_areas": ["employment"]}, "high", "Art. 6(2), Annex III"),
        ({"annex_iii_areas": ["essential_services"], "interacts_with_people": True}, "high", "Art. 50(1)"),
        ({"safety_component": True, "art_6_3_exception": "narrow_procedural_task"}, "high", "Art. 6(1), Annex I"),
        ({"annex_iii_areas": ["education"], "art_6_3_exception": "preparatory_task"}, "minimal", "Art. 6(3), Art. 6(4)"),
        ({"annex_iii_areas": ["employment"], "art_6_3_exception": "narrow_procedural_task",
          "profiles_natural_persons": True}, "high", "Art. 6(3), last subparagraph"),
        ({"annex_iii_areas": ["migration"], "art_6_3_exception": "detects_decision_patterns",
          "generates_synthetic_content": True}, "limited", "Art. 50(2)"),
        ({"interacts_with_people": True}, "limited", "Art. 50(1)"),
        ({"deep_fake": True}, "limited", "Art. 50(4)"),
        ({"emotion_recognition_or_biometric_categorisation": True}, "high", "Annex III point 1(b), 1(c)"),
        ({"uses_gpai_model": True}, "minimal", "Art. 53, Art. 55"),
        ({"uses_gpai_model": True, "interacts_with_people": True}, "limited", "Art. 53, Art. 55"),
    ],
)  # fmt: skip
def test_classify_gives_the_class_and_cites_the_article(given: dict[str, Any], expected: str, article: str) -> None:
    risk_class, reasons = classify(answers(**given))
    assert risk_class == expected
    assert article in [reason["article"] for reason in reasons]
    assert all(reason["text"] for reason in reasons)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({**NO, "vibes": True}, "answers.vibes"),
        ({k: v for k, v in NO.items() if k != "deep_fake"}, "answers.deep_fake"),
        ({**NO, "social_scoring": "yes"}, "answers.social_scoring"),
        ({**NO, "annex_iii_areas": ["astrology"]}, "answers.annex_iii_areas"),
        ({**NO, "annex_iii_areas": "employment"}, "answers.annex_iii_areas"),
        ({**NO, "art_6_3_exception": "because"}, "answers.art_6_3_exception"),
        (["social_scoring"], "answers"),
    ],
)
def test_bad_answers_are_refused_naming_the_question(bad: Any, field: str) -> None:
    with pytest.raises(DomainError) as refused:
        classify(bad)
    assert refused.value.code == "invalid_input" and field in refused.value.fields
    assert field.removeprefix("answers.") in refused.value.message


def test_answers_are_kept_in_a_canonical_form() -> None:
    clean = answers_clean(answers(annex_iii_areas=["migration", "education", "migration"]))
    assert clean["annex_iii_areas"] == ["education", "migration"]


# Services and the approval path.


@pytest.fixture
def cast(people: dict[str, Any]) -> dict[str, Any]:
    users = get_user_model().objects
    admin = users.create_user(username="platform-admin")
    project_role_grant(actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN,
                       reason="setup")  # fmt: skip
    return {**people, "platform_admin": users.get(pk=admin.pk)}


def register(cast: dict[str, Any], slug: str = "hiring", **extra: Any) -> AISystem:
    arguments = {
        "actor": cast["ml_engineer"], "project": cast["project"], "slug": slug, "name": "CV screening",
        "purpose": "ranks job applications for recruiters", "owner": cast["compliance_officer"],
        "deployers": ["HR department"], "description": "a fine-tuned classifier",
        "human_oversight": "a recruiter reviews every ranking and may stop the system",
    }  # fmt: skip
    return ai_system_register(**{**arguments, **extra})


def classified(cast: dict[str, Any], system: AISystem, approvers: tuple[str, ...], **given: Any) -> Any:
    classification = ai_system_classification_create(actor=cast["ml_engineer"], system=system, answers=answers(**given))
    request = ai_system_classification_submit(actor=cast["ml_engineer"], classification=classification)
    for approver in approvers:
        approval_request_decide(actor=cast[approver], request_id=request.pk, decision="approve", reason="ok")
    classification.refresh_from_db()
    return classification, ApprovalRequest.objects.get(pk=request.pk)


def test_register_classify_and_approve_through_the_ledger(cast: dict[str, Any]) -> None:
    system = register(cast)
    assert system.risk_class == "unclassified" and system.classification is None
    [registered] = Entry.objects.filter(action="ai_system.registered", subject_id=str(system.pk))
    assert _payload(registered)["owner"] == "compliance-officer" and registered.scope.project_id == cast["project"].pk

    ai_system_update(actor=cast["compliance_officer"], system=system, deployers=["HR", "works council"])
    assert _payload(Entry.objects.get(action="ai_system.updated")) == {"deployers": ["HR", "works council"]}

    classification, request = classified(cast, system, ("compliance_officer",), annex_iii_areas=["employment"])
    assert request.rule["approvals"] == [{"role": "compliance_officer", "count": 1}]
    assert request.context == {"risk_tier": "high"} and request.state == "approved"
    assert classification.state == "approved" and classification.number == 1 and classification.decided_at
    system.refresh_from_db()
    assert system.risk_class == "high" and system.classification_id == classification.pk
    assert _actions("ai_system_classification", classification.pk) == [
        "ai_system_classification.created", "approval.requested", "ai_system_classification.submitted",
        "approval.approved", "ai_system_classification.approved",
    ]  # fmt: skip
    approved = Entry.objects.get(action="ai_system_classification.approved", subject_id=str(classification.pk))
    assert _payload(approved)["risk_class"] == "high"
    assert _actions("ai_system", system.pk) == ["ai_system.registered", "ai_system.updated", "ai_system.classified"]
    assert _payload(Entry.objects.get(action="ai_system.classified")) == {
        "classification": 1, "risk_class": "high", "previous_risk_class": "unclassified",
    }  # fmt: skip

    # Approved once: asking again is refused; a new classification is number 2.
    with pytest.raises(DomainError) as refused:
        ai_system_classification_submit(actor=cast["ml_engineer"], classification=classification)
    assert refused.value.code == "not_now"
    second, _ = classified(cast, system, ("compliance_officer",), interacts_with_people=True)
    system.refresh_from_db()
    assert second.number == 2 and system.risk_class == "limited" and system.classification_id == second.pk


def test_an_exception_or_a_prohibited_finding_needs_the_platform_admin_too(cast: dict[str, Any]) -> None:
    system = register(cast)
    exempted, request = classified(
        cast, system, ("compliance_officer",), annex_iii_areas=["education"], art_6_3_exception="preparatory_task"
    )
    assert request.context == {"risk_tier": "exempted"} and request.state == "pending"
    assert exempted.state == "pending" and AISystem.objects.get(pk=system.pk).risk_class == "unclassified"
    approval_request_decide(actor=cast["platform_admin"], request_id=request.pk, decision="approve", reason="ok")
    assert AISystem.objects.get(pk=system.pk).risk_class == "minimal"

    banned = register(cast, slug="scoring")
    _, request = classified(cast, banned, ("compliance_officer", "platform_admin"), social_scoring=True)
    assert request.state == "approved" and AISystem.objects.get(pk=banned.pk).risk_class == "prohibited"


def test_a_request_closed_unapproved_says_so_on_the_classification(cast: dict[str, Any]) -> None:
    """Rejected or withdrawn, the classification says so (and is ledgered); an expired request leaves
    a draft. The system's class does not change, and the classification may be submitted again."""
    system = register(cast)
    engineer = cast["ml_engineer"]
    classification = ai_system_classification_create(
        actor=engineer, system=system, answers=answers(annex_iii_areas=["employment"])
    )
    closings = (
        ("rejected", lambda r: approval_request_decide(
            actor=cast["compliance_officer"], request_id=r.pk, decision="reject", reason="employment is wrong")),
        ("withdrawn", lambda r: approval_request_withdraw(actor=engineer, request_id=r.pk, reason="answers to redo")),
        ("draft", lambda r: (ApprovalRequest.objects.filter(pk=r.pk).update(expires_at=timezone.now()),
                             approval_requests_expire_due(actor=cast["system"]))),
    )  # fmt: skip
    for state, close in closings:
        request = ai_system_classification_submit(actor=engineer, classification=classification)
        assert AISystemClassification.objects.get(pk=classification.pk).state == "pending"
        close(request)
        assert AISystemClassification.objects.get(pk=classification.pk).state == state
        assert AISystem.objects.get(pk=system.pk).risk_class == "unclassified"
    closed = Entry.objects.filter(subject_id=str(classification.pk), action__startswith="ai_system_classification.")
    assert [e.action.split(".")[1] for e in closed.order_by("index")] == [
        "created", "submitted", "rejected", "submitted", "withdrawn", "submitted", "expired",
    ]  # fmt: skip
    assert _payload(closed.get(action="ai_system_classification.rejected"))["state"] == "rejected"
    # After all that, it is still approved the ordinary way.
    request = ai_system_classification_submit(actor=engineer, classification=classification)
    approval_request_decide(actor=cast["compliance_officer"], request_id=request.pk, decision="approve", reason="ok")
    assert AISystem.objects.get(pk=system.pk).risk_class == "high"


def test_who_may_do_what_and_the_refusals(cast: dict[str, Any]) -> None:
    with pytest.raises(DomainError) as refused:
        register(cast, actor=cast["auditor"])
    assert refused.value.status_code == 403
    system = register(cast, actor=cast["compliance_officer"])  # compliance officers register systems too
    with pytest.raises(DomainError) as refused:
        register(cast)
    assert refused.value.status_code == 409
    for bad, field in (({"slug": "Not A Slug"}, "slug"), ({"purpose": "  "}, "purpose"), ({"deployers": [""]},
                       "deployers"), ({"owner": get_user_model().objects.create_user(username="x")}, "owner")):  # fmt: skip
        with pytest.raises(DomainError) as refused:
            register(cast, **{"slug": "other", **bad})
        assert field in refused.value.fields
    with pytest.raises(DomainError) as refused:
        ai_system_update(actor=cast["ml_engineer"], system=system, risk_class="minimal")
    assert "risk_class" in refused.value.fields
    # The maker of a classification never approves it; a compliance officer may not submit one.
    classification = ai_system_classification_create(
        actor=cast["compliance_officer"], system=system, answers=answers(annex_iii_areas=["employment"])
    )
    with pytest.raises(DomainError) as refused:
        ai_system_classification_submit(actor=cast["compliance_officer"], classification=classification)
    assert refused.value.status_code == 403
    request = ai_system_classification_submit(actor=cast["ml_engineer"], classification=classification)
    with pytest.raises(DomainError) as refused:
        approval_request_decide(actor=cast["compliance_officer"], request_id=request.pk, decision="approve", reason="x")
    assert refused.value.status_code == 422
    assert AISystemClassification.objects.get(pk=classification.pk).state == "pending"
    assert Entry.objects.filter(action="ai_system.registered").count() == 1


# The API.


def _auth(user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}


def test_the_api(client: Client, cast: dict[str, Any]) -> None:
    engineer, officer, auditor = _auth(cast["ml_engineer"]), _auth(cast["compliance_officer"]), _auth(cast["auditor"])
    questionnaire = client.get("/api/v1/ai-systems/questionnaire", **auditor).json()
    assert [q["id"] for q in questionnaire["questions"]] == [q.id for q in QUESTIONS]
    assert "high" in questionnaire["risk_classes"]

    body = {"slug": "hiring", "name": "CV screening", "purpose": "ranks applications", "deployers": ["HR"]}
    created = client.post("/api/v1/projects/assistant/ai-systems/", body, content_type="application/json", **engineer)
    assert created.status_code == 201, created.json()
    system = created.json()
    assert system["risk_class"] == "unclassified" and system["owner"] == "ml-engineer" and system["deployments"] == []
    for bad, field in (({**body, "slug": "Bad Slug"}, "slug"), ({**body, "risk_class": "minimal"}, "risk_class"),
                       ({**body, "slug": "b", "owner": "nobody"}, "owner")):  # fmt: skip
        refused = client.post(
            "/api/v1/projects/assistant/ai-systems/", bad, content_type="application/json", **engineer
        )
        assert refused.status_code == 400 and field in json.dumps(refused.json()), refused.json()
    assert client.post("/api/v1/projects/assistant/ai-systems/", body, content_type="application/json",
                       **auditor).status_code == 403  # fmt: skip

    path = f"/api/v1/ai-systems/{system['id']}"
    changed = client.post(f"{path}/update", {"owner": "compliance-officer"}, content_type="application/json", **officer)
    assert changed.status_code == 200 and changed.json()["owner"] == "compliance-officer"

    bad = client.post(f"{path}/classifications/", {"answers": {**NO, "vibes": True}}, content_type="application/json",
                      **engineer)  # fmt: skip
    assert bad.status_code == 400 and "answers.vibes" in bad.json()["error"]["fields"], bad.json()
    assert AISystemClassification.objects.count() == 0
    made = client.post(f"{path}/classifications/", {"answers": answers(annex_iii_areas=["employment"])},
                       content_type="application/json", **officer)  # fmt: skip
    assert made.status_code == 201 and made.json()["risk_class"] == "high" and made.json()["state"] == "draft"
    submitted = client.post(f"/api/v1/ai-system-classifications/{made.json()['id']}/submit", {},
                            content_type="application/json", **engineer)  # fmt: skip
    assert submitted.status_code == 201 and submitted.json()["state"] == "pending", submitted.json()
    listed = client.get(f"{path}/classifications/", **auditor).json()["results"]
    assert listed[0]["approval_request"] == {"id": submitted.json()["id"], "state": "pending"}
    systems = client.get("/api/v1/projects/assistant/ai-systems/?risk_class=unclassified", **auditor).json()
    assert [(s["slug"], s["classification_count"]) for s in systems["results"]] == [("hiring", 1)]

    # Another project's system is no system at all.
    other = project_create(actor=cast["system"], slug="elsewhere", name="Elsewhere")
    hidden = register(cast, project=other, actor=cast["system"], owner=cast["system"])
    assert client.get(f"/api/v1/ai-systems/{hidden.pk}", **engineer).status_code == 404
    assert client.post(f"/api/v1/ai-systems/{hidden.pk}/classifications/", {"answers": NO},
                       content_type="application/json", **engineer).status_code == 404  # fmt: skip


# The admin pages.


def test_admin_register_and_classify_as_a_compliance_officer(client: Client, cast: dict[str, Any]) -> None:
    admin_login(client, cast["compliance_officer"])
    assert client.get("/admin/systems/aisystem/add/").status_code == 200
    form = {"project": cast["project"].pk, "slug": "hiring", "name": "CV screening", "purpose": "ranks applications",
            "deployers": "HR\nworks council\n"}  # fmt: skip
    page = client.post("/admin/systems/aisystem/add/", form)
    system = AISystem.objects.get(slug="hiring")
    assert page.status_code == 302 and page["Location"].endswith(f"/admin/systems/aisystem/{system.pk}/classify/")
    assert system.deployers == ["HR", "works council"] and system.owner == cast["compliance_officer"]
    refused = client.post("/admin/systems/aisystem/add/", form)
    assert refused.status_code == 200 and b"already has an AI system" in refused.content

    questionnaire = client.get(f"/admin/systems/aisystem/{system.pk}/classify/")
    assert questionnaire.status_code == 200 and b"Art. 5(1)(a)" in questionnaire.content
    filled = {q.id: "no" for q in QUESTIONS if q.kind == "yes_no"} | {
        "annex_iii_areas": ["employment"], "art_6_3_exception": "none", "submit_for_approval": "on",
    }  # fmt: skip
    unanswered = {k: v for k, v in filled.items() if k != "profiles_natural_persons"}  # nothing is ticked for you
    page = client.post(f"/admin/systems/aisystem/{system.pk}/classify/", unanswered)
    assert page.status_code == 200 and b"Answer yes or no." in page.content
    assert not AISystemClassification.objects.filter(system=system).exists()
    page = client.post(f"/admin/systems/aisystem/{system.pk}/classify/", filled, follow=True)
    classification = AISystemClassification.objects.get(system=system)
    assert classification.risk_class == "high" and classification.state == "draft"  # a compliance officer
    assert b"kept in draft" in page.content  # may not submit: an ML engineer does

    listing = client.get("/admin/systems/aisystem/")
    assert listing.status_code == 200 and b"hiring" in listing.content
    detail = client.get(f"/admin/systems/aisystem/{system.pk}/change/")
    assert detail.status_code == 200 and b"classify-link" in detail.content
    shown = client.get(f"/admin/systems/aisystemclassification/{classification.pk}/change/")
    assert shown.status_code == 200 and b"Annex III point 4" in shown.content
    assert b"<b>no exception claimed</b>" in shown.content  # answers in words, not codes

    assert b"update-link" in detail.content
    changed = {"name": "CV screening", "purpose": "ranks applications", "human_oversight": "a recruiter reads each",
               "deployers": "HR\n"}  # fmt: skip
    page = client.post(f"/admin/systems/aisystem/{system.pk}/update/", changed)
    assert page.status_code == 302, page.content.decode()[-1500:]
    system.refresh_from_db()
    assert system.deployers == ["HR"] and system.human_oversight == "a recruiter reads each"
    updated = Entry.objects.filter(action="ai_system.updated", subject_id=str(system.pk)).get()
    assert set(json.loads(bytes(updated.body))["payload"]) == {"human_oversight", "deployers"}

    client.logout()
    admin_login(client, cast["ml_engineer"])
    page = client.post(
        "/admin/systems/aisystemclassification/",
        {"action": "submit_for_approval", "_selected_action": [classification.pk]}, follow=True,
    )  # fmt: skip
    assert page.status_code == 200
    assert AISystemClassification.objects.get(pk=classification.pk).state == "pending"
    admin_login(client, cast["auditor"])
    assert client.get("/admin/systems/aisystem/add/").status_code == 403
    assert client.get(f"/admin/systems/aisystem/{system.pk}/classify/").status_code == 403
    assert client.get(f"/admin/systems/aisystem/{system.pk}/update/").status_code == 403
