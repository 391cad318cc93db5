"""The register of AI systems: registering and updating a system, classifying it (a numbered set of
questionnaire answers, approved through the generic approval requests), and what an approval of a
classification does. Every write checks the actor's role and appends its ledger entries inside
its transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from audits.ledger.services import Subject, ledger_append
from common.digests import canonical_digest
from common.errors import Conflict, DomainError
from governance.models import Project
from governance.permissions import require_project_role
from governance.roles import Role
from systems.models import AISystem, AISystemClassification, ClassificationState, RiskClass
from systems.rules import answers_clean, classify

# Who registers systems and fills their questionnaires: the engineers who build them, the
# compliance officers who answer for them, the project's platform admins. Auditors only read.
REGISTRAR_ROLES = {Role.ML_ENGINEER, Role.COMPLIANCE_OFFICER, Role.PLATFORM_ADMIN}
SUBMITTER_ROLES = {Role.ML_ENGINEER, Role.PLATFORM_ADMIN}
APPROVE_ACTION = "ai_system_classification.approve"
TEXT_FIELDS = ("name", "purpose", "description", "human_oversight")
UPDATABLE = ("name", "purpose", "description", "human_oversight", "owner", "deployers")


def _invalid(field: str, problem: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {problem}", fields={field: [problem]})


def system_subject(system: AISystem) -> Subject:
    return Subject("ai_system", str(system.pk))


def classification_digest(classification: AISystemClassification) -> str:
    """What an approval of a classification vouches for: these answers, giving this class."""
    return canonical_digest(
        {
            "system": str(classification.system_id), "number": classification.number,
            "answers": classification.answers, "risk_class": classification.risk_class,
        }
    )  # fmt: skip


def classification_subject(classification: AISystemClassification) -> Subject:
    return Subject("ai_system_classification", str(classification.pk), classification_digest(classification))


def _deployers_clean(deployers: Any) -> list[str]:
    if not isinstance(deployers, list) or not all(isinstance(d, str) and d.strip() for d in deployers):
        raise _invalid("deployers", "a list of non-empty names (who uses the system under their authority)")
    if len(deployers) > 50 or any(len(d) > 200 for d in deployers):
        raise _invalid("deployers", "at most 50 names of at most 200 characters")
    return [d.strip() for d in deployers]


def _owner_clean(owner: Any, project: Project) -> Any:
    from governance.permissions import is_platform_admin, project_roles_held

    signed_in = getattr(owner, "is_authenticated", False)
    if not signed_in or not (is_platform_admin(owner) or project_roles_held(owner, project)):
        raise _invalid("owner", f"a person who holds a role in project {project.slug}")
    return owner


def _text_clean(field: str, value: Any, *, required: bool) -> str:
    if not isinstance(value, str):
        raise _invalid(field, "text")
    if required and not value.strip():
        raise _invalid(field, "may not be blank")
    return value.strip()


def ai_system_register(
    *,
    actor: Any,
    project: Project,
    slug: str,
    name: str,
    purpose: str,
    owner: Any,
    deployers: list[str] | None = None,
    description: str = "",
    human_oversight: str = "",
) -> AISystem:
    """Register an AI system (a use case) in ``project``: unclassified until a classification of
    it is approved."""
    require_project_role(actor, project, REGISTRAR_ROLES, "registering an AI system")
    if not isinstance(slug, str) or not slug or slugify(slug) != slug or len(slug) > 100:
        raise _invalid("slug", f"a slug (lowercase letters, digits, hyphens), got {slug!r}")
    name = _text_clean("name", name, required=True)
    if len(name) > 200:
        raise _invalid("name", "at most 200 characters")
    purpose = _text_clean("purpose", purpose, required=True)
    description = _text_clean("description", description, required=False)
    human_oversight = _text_clean("human_oversight", human_oversight, required=False)
    deployers = _deployers_clean(deployers or [])
    owner = _owner_clean(owner, project)
    with transaction.atomic():
        if AISystem.objects.filter(project=project, slug=slug).exists():
            raise Conflict("already_exists", f"project {project.slug} already has an AI system {slug!r}")
        system = AISystem.objects.create(
            project=project, slug=slug, name=name, purpose=purpose, description=description,
            human_oversight=human_oversight, owner=owner, deployers=deployers, created_by=actor,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="ai_system.registered", subject=system_subject(system),
            payload={"project": project.slug, "slug": slug, "name": name, "purpose": purpose,
                     "owner": owner.get_username(), "deployers": deployers},
        )  # fmt: skip
    return system


def ai_system_update(*, actor: Any, system: AISystem, **changes: Any) -> AISystem:
    """Change a system's name, purpose, description, human oversight, owner or deployers. The
    entry names the fields changed, with their new values (the owner by username)."""
    require_project_role(actor, system.project, REGISTRAR_ROLES, "updating an AI system")
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise _invalid(unknown[0], f"not a field that can be changed; these can: {', '.join(UPDATABLE)}")
    clean: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "deployers":
            clean[field] = _deployers_clean(value)
        elif field == "owner":
            clean[field] = _owner_clean(value, system.project)
        else:
            clean[field] = _text_clean(field, value, required=field in ("name", "purpose"))
    with transaction.atomic():
        system = AISystem.objects.select_for_update().get(pk=system.pk)
        changed = {f: v for f, v in clean.items() if getattr(system, f) != v}
        if not changed:
            return system
        for field, value in changed.items():
            setattr(system, field, value)
        system.save(update_fields=list(changed))
        shown = {f: (v.get_username() if f == "owner" else v) for f, v in changed.items()}
        ledger_append(actor=actor, action="ai_system.updated", subject=system_subject(system), payload=shown)
    return system


def ai_system_classification_create(*, actor: Any, system: AISystem, answers: Any) -> AISystemClassification:
    """A new numbered classification of ``system`` from the questionnaire's answers, in draft: the
    class and the reasons follow from the answers (``systems.rules.classify``). It counts once a
    request ``ai_system_classification.approve`` about it is approved."""
    require_project_role(actor, system.project, REGISTRAR_ROLES, "classifying an AI system")
    answers = answers_clean(answers)
    risk_class, reasons = classify(answers)
    with transaction.atomic():
        latest = AISystemClassification.objects.filter(system=system).order_by("-number").first()
        classification = AISystemClassification.objects.create(
            system=system, number=(latest.number + 1) if latest else 1, answers=answers, risk_class=risk_class,
            reasons=reasons, created_by=actor,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="ai_system_classification.created", subject=classification_subject(classification),
            payload={"system": str(system.pk), "number": classification.number, "answers": answers,
                     "risk_class": risk_class, "reasons": reasons},
        )  # fmt: skip
    return classification


def ai_system_classification_submit(*, actor: Any, classification: AISystemClassification, comment: str = "") -> Any:
    """Ask for the classification's approval (``ai_system_classification.approve``, under the
    policy's rule for its class) and mark it pending, in one transaction. A classification
    already approved, or one a later classification replaced, is refused (409)."""
    from governance.services import approval_request_submit

    # The system's makers ask (the requester roles among its registrars); a compliance officer approves.
    require_project_role(actor, classification.system.project, SUBMITTER_ROLES, "submitting a classification")
    with transaction.atomic():
        classification = AISystemClassification.objects.select_for_update().get(pk=classification.pk)
        request = approval_request_submit(
            actor=actor, subject_type="ai_system_classification", subject_id=str(classification.pk),
            action=APPROVE_ACTION, comment=comment,
        )  # fmt: skip
        if classification.state != ClassificationState.PENDING:
            classification.state = ClassificationState.PENDING
            classification.save(update_fields=["state"])
        ledger_append(
            actor=actor, action="ai_system_classification.submitted", subject=classification_subject(classification),
            payload={"request": request.pk, "risk_class": classification.risk_class},
        )  # fmt: skip
    return request


def classification_not_now(classification: AISystemClassification, action: str) -> str | None:
    """Why a classification may not be asked about (or approved) now: it is approved already, or
    a later classification of the same system exists."""
    if classification.state == ClassificationState.APPROVED:
        return f"classification {classification.number} of {classification.system} is approved already"
    later = AISystemClassification.objects.filter(system_id=classification.system_id, number__gt=classification.number)
    if later.exists():
        return (
            f"classification {classification.number} of {classification.system} was replaced by a later one; "
            "submit the latest"
        )
    return None


def on_classification_approved(classification: AISystemClassification, action: str, actor: Any) -> None:
    """In the transaction that approves the request: the classification is approved, and it becomes
    the system's classification (its class the system's), both ledgered. Deployments of the system
    whose digest named the earlier classification no longer match their approvals."""
    now = timezone.now()
    classification = AISystemClassification.objects.select_for_update().get(pk=classification.pk)
    classification.state, classification.decided_at = ClassificationState.APPROVED, now
    classification.save(update_fields=["state", "decided_at"])
    ledger_append(
        actor=actor, action="ai_system_classification.approved", subject=classification_subject(classification),
        payload={"system": str(classification.system_id), "number": classification.number,
                 "risk_class": classification.risk_class},
    )  # fmt: skip
    system = AISystem.objects.select_for_update().get(pk=classification.system_id)
    previous = system.classification
    if previous is not None and previous.number > classification.number:
        return  # a later classification is in force already
    system.risk_class, system.classification = RiskClass(classification.risk_class), classification
    system.save(update_fields=["risk_class", "classification"])
    ledger_append(
        actor=actor, action="ai_system.classified", subject=system_subject(system),
        payload={"classification": classification.number, "risk_class": classification.risk_class,
                 "previous_risk_class": previous.risk_class if previous else RiskClass.UNCLASSIFIED.value},
    )  # fmt: skip


# A classification whose request closed unapproved: rejected or withdrawn it says so; a request
# that expired leaves it a draft, to submit again. Each may be submitted again (a new request).
CLOSED_STATES = {"rejected": ClassificationState.REJECTED, "withdrawn": ClassificationState.WITHDRAWN,
                 "expired": ClassificationState.DRAFT}  # fmt: skip


def on_classification_closed(classification: AISystemClassification, action: str, state: str, actor: Any) -> None:
    """In the transaction that closes its request without approval: a pending classification
    becomes rejected, withdrawn or (the request expired) a draft again, ledgered; the system's
    class is unchanged."""
    classification = AISystemClassification.objects.select_for_update().get(pk=classification.pk)
    if classification.state != ClassificationState.PENDING:
        return
    classification.state = CLOSED_STATES[state]
    classification.save(update_fields=["state"])
    ledger_append(
        actor=actor, action=f"ai_system_classification.{state}", subject=classification_subject(classification),
        payload={"system": str(classification.system_id), "number": classification.number,
                 "risk_class": classification.risk_class, "state": classification.state},
    )  # fmt: skip
