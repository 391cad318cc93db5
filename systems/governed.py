"""The register's governed subject (``ai_system_classification``), the deployment's evidence check
``ai_system_classified`` and the policy context a deployment takes from its AI system, plugged into
governance in ``SystemsConfig.ready``."""

from __future__ import annotations

from typing import Any

from governance.evidence import register_check
from governance.subjects import (
    Fact,
    SubjectType,
    authors_by_field,
    names_by_pk,
    register_subject_type,
    register_summary,
)


def _classification(pk: str) -> Any:
    from systems.models import AISystemClassification

    text = str(pk)
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        return None
    return AISystemClassification.objects.select_related("system__project", "created_by").filter(pk=int(text)).first()


def _describe(classification: Any) -> dict[str, Any]:
    return {
        "system": str(classification.system), "number": classification.number,
        "risk_class": classification.risk_class, "answers": classification.answers, "reasons": classification.reasons,
    }  # fmt: skip


def classification_context(classification: Any) -> dict[str, str]:
    """The policy context of a classification: its class as ``risk_tier``; an Annex III use that an
    Art. 6(3) exception keeps below high-risk is ``exempted`` (its policy rule asks more)."""
    from systems.rules import claims_exception

    if classification.risk_class != "high" and classification.risk_class != "prohibited":
        if claims_exception(classification.answers):
            return {"risk_tier": "exempted"}
    return {"risk_tier": classification.risk_class}


def _classification_facts(classification: Any) -> list[Fact]:
    system = classification.system
    tone = {"prohibited": "bad", "high": "warning"}.get(classification.risk_class, "")
    facts = [
        Fact("AI system", f"{system.name} ({system}): {system.purpose}", link=system),
        Fact("current class", system.get_risk_class_display()),
        Fact("class these answers give", classification.get_risk_class_display(), tone=tone),
    ]
    facts += [Fact(reason.get("article", ""), reason.get("text", "")) for reason in classification.reasons]
    return facts


def deployment_risk_context(deployment: Any) -> dict[str, str]:
    """The policy context a deployment takes from its AI system: the system's risk class as
    ``risk_class``, which a policy's ``when`` matches (``governance.policy.CONTEXT_KEYS``). A
    deployment of no system adds nothing."""
    system = deployment.ai_system
    if system is None:
        return {}
    return {"risk_class": system.risk_class}


HIGH_RISK_PREREQUISITES = (
    ("description", "a description of the system (Annex IV point 1)"),
    ("human_oversight", "its human oversight measures (Art. 14, Art. 26(2))"),
    ("deployers", "the deployers who use it (Art. 26)"),
)


def ai_system_classified(deployment: Any) -> tuple[bool, str]:
    """A deployment's AI system has an approved classification that allows deploying it: not
    prohibited; for a high-risk system, with its description, human oversight measures and
    deployers recorded; for a limited-risk one, with its output marked as AI-generated (Art. 50).
    A deployment of no registered system holds (there is nothing to classify)."""
    system = deployment.ai_system
    if system is None:
        return True, "not part of a registered AI system"
    current = system.classification
    if current is None:
        return False, f"AI system {system} has no approved classification"
    where = f"AI system {system}, classification {current.number}"
    if system.risk_class == "prohibited":
        return False, f"{where}: a prohibited practice (Art. 5) may not be deployed"
    if system.risk_class == "high":
        missing = [what for field, what in HIGH_RISK_PREREQUISITES if not getattr(system, field)]
        if missing:
            return False, f"{where}: high-risk, and the register lacks {'; '.join(missing)}"
        return True, f"{where}: high-risk, with description, human oversight and deployers recorded"
    if system.risk_class == "limited" and not (deployment.transparency or {}).get("mark", True):
        return False, f"{where}: limited-risk (Art. 50), and this deployment does not mark its output"
    return True, f"{where}: {system.get_risk_class_display()}"


def register() -> None:
    from systems.models import AISystemClassification
    from systems.services import (
        APPROVE_ACTION,
        classification_digest,
        classification_not_now,
        on_classification_approved,
        on_classification_closed,
    )

    register_subject_type(
        SubjectType(
            name="ai_system_classification", get=_classification, project=lambda c: c.system.project,
            digest=classification_digest, describe=_describe, actions=(APPROVE_ACTION,),
            context=classification_context, on_approved=on_classification_approved, on_closed=on_classification_closed,
            authors=lambda c: [c.created_by_id], authors_by_id=authors_by_field(AISystemClassification, "created_by"),
            names_by_id=names_by_pk(AISystemClassification, "system__project"),
            not_now=classification_not_now,
        )
    )  # fmt: skip
    register_summary("ai_system_classification", _classification_facts)
    register_check("ai_system_classified", "deployment", ai_system_classified)
