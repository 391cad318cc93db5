"""Feedback on a deployment's outputs (post-market monitoring): a rating per person and served
request, recorded in the ledger with the request id, never the text. A rater may add a
``correction`` (a better answer): free text that may hold personal data, so the ledger records
only that there is one and its length; it is kept on the row for a preference dataset
(``serving.services.preference``), where it passes the dataset rules (PII scan, review)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, transaction

from audits.ledger.services import ledger_append
from common.errors import Conflict, DomainError, PermissionDenied
from governance.permissions import is_platform_admin, project_roles_held
from serving.models import Deployment
from serving.rules import FEEDBACK_ROLES, SERVED_STATES, deployment_subject
from serving.selectors import deployment_served_request
from serving.specs import invalid_input

CORRECTION_MAX_CHARS = 4000


def deployment_feedback_give(
    *, actor: Any, deployment: Deployment, request_id: str, rating: int, category: str, correction: str = ""
) -> Any:
    """Rate one completion of a deployment: any member of its project except an auditor (auditors
    are read-only: 403 naming the roles that may). One rating per person and request; the ledger
    records it with the request id, never the text.

    ``request_id`` must be one the deployment's server answered with: it is looked up in the
    deployment's inference log (400 ``invalid_input`` on ``request_id`` otherwise). Caveat: each
    call reads the log through, and the log must be readable here (the embedded default's shared
    ``SERVING_ROOT``); deployments handed off to a serving platform are never ``served`` here."""
    from serving.models import FeedbackCategory, InferenceFeedback

    roles = project_roles_held(actor, deployment.project)
    if not (is_platform_admin(actor) or roles):
        raise DomainError("not_found", f"no deployment {deployment.pk}", status_code=404)
    if not (is_platform_admin(actor) or roles & set(FEEDBACK_ROLES)):
        raise PermissionDenied(
            "permission_denied",
            f"giving feedback needs one of {', '.join(FEEDBACK_ROLES)} in {deployment.project.slug} "
            "(auditors are read-only)",
        )
    try:
        request_uuid = uuid.UUID(str(request_id))
    except ValueError:
        raise invalid_input("request_id", f"the id the server returned (a UUID), got {request_id!r}") from None
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
        raise invalid_input("rating", f"a whole number from 1 to 5, got {rating!r}")
    if category not in FeedbackCategory.values:
        raise invalid_input("category", f"one of {', '.join(FeedbackCategory.values)}, got {category!r}")
    if not isinstance(correction, str) or len(correction) > CORRECTION_MAX_CHARS:
        length = len(correction) if isinstance(correction, str) else type(correction).__name__
        raise invalid_input("correction", f"a text of at most {CORRECTION_MAX_CHARS} characters, got {length}")
    correction = correction.strip()
    if deployment.state not in SERVED_STATES:
        raise Conflict("not_served", f"deployment {deployment.pk} has not served any request ({deployment.state})")
    if not deployment_served_request(deployment, request_uuid):
        raise invalid_input("request_id", f"deployment {deployment.pk} served no request {request_uuid}")
    given = Conflict("feedback_given", f"you already rated request {request_uuid}")
    with transaction.atomic():
        if InferenceFeedback.objects.filter(deployment=deployment, request_id=request_uuid, given_by=actor).exists():
            raise given
        entry = ledger_append(
            actor=actor, action="deployment.feedback", subject=deployment_subject(deployment),
            payload={"request_id": str(request_uuid), "rating": rating, "category": category,
                     **({"correction_chars": len(correction)} if correction else {})},
        )  # fmt: skip
        try:
            with transaction.atomic():  # a twin request may insert between the check and here
                feedback = InferenceFeedback.objects.create(
                    deployment=deployment, request_id=request_uuid, rating=rating, category=category,
                    correction=correction, given_by=actor,
                )  # fmt: skip
        except IntegrityError:
            raise given from None
    feedback.ledger_index = entry.index
    return feedback
