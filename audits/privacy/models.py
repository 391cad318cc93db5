"""Data-subject requests (GDPR Arts. 15-21, CCPA §§1798.100-1798.121), legal holds and the model
reviews an erasure opens.

Scope: a request belongs to one project, the unit every permission is granted on. A person whose
data sits in several projects makes one request per project (the compliance officers of each
act on it); the search looks at that project's dataset versions only.

Personal data: the requester's identifiers never sit in clear in a row or a ledger entry. They
are sealed in the ledger vault under the request's own data-subject reference (``subject_ref``);
rows keep the sealed form and keyed hashes (HMAC, the data-subject index's key) only. Erasure
shreds the key: the sealed identifiers become unreadable everywhere.

Rows change only through ``audits.privacy.services``. Requests are never deleted: they are the
CCPA §7101 request log, kept at least 24 months (``delete()`` refuses).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from common.errors import Conflict
from governance.models import Project
from registry.models import ModelVersion

RETENTION_NOTE = "requests are the CCPA §7101 request log, kept at least 24 months: they are never deleted"


class Regime(models.TextChoices):
    GDPR = "gdpr", "GDPR"
    CCPA = "ccpa", "CCPA"


class Kind(models.TextChoices):
    # GDPR
    ACCESS = "access", "access (GDPR Art. 15)"
    ERASURE = "erasure", "erasure (GDPR Art. 17)"
    RECTIFICATION = "rectification", "rectification (GDPR Art. 16)"
    OBJECTION = "objection", "objection (GDPR Art. 21)"
    # CCPA
    KNOW = "know", "right to know (CCPA §1798.110)"
    DELETE = "delete", "right to delete (CCPA §1798.105)"
    CORRECT = "correct", "right to correct (CCPA §1798.106)"
    OPT_OUT = "opt_out", "opt out of sale or sharing (CCPA §1798.120)"
    LIMIT_SENSITIVE = "limit_sensitive", "limit use of sensitive personal information (CCPA §1798.121)"


KINDS_BY_REGIME: dict[str, tuple[str, ...]] = {
    Regime.GDPR: (Kind.ACCESS, Kind.ERASURE, Kind.RECTIFICATION, Kind.OBJECTION),
    Regime.CCPA: (Kind.KNOW, Kind.DELETE, Kind.CORRECT, Kind.OPT_OUT, Kind.LIMIT_SENSITIVE),
}
ACCESS_KINDS = frozenset({Kind.ACCESS, Kind.KNOW})
ERASURE_KINDS = frozenset({Kind.ERASURE, Kind.DELETE})
# Requests a business may not make wait on identity verification (Cal. Code Regs. tit. 11,
# §7026(d) for opt-outs, §7027(e) for limiting sensitive data): they are searched and completed
# straight from ``received``. A verification may still be recorded; the flow never asks for it.
UNVERIFIED_KINDS = frozenset({Kind.OPT_OUT, Kind.LIMIT_SENSITIVE})


class Channel(models.TextChoices):
    """The manner in which the request was made (CCPA §7101(a))."""

    EMAIL = "email"
    WEB_FORM = "web_form", "web form"
    PHONE = "phone"
    MAIL = "mail"
    IN_PERSON = "in_person", "in person"


class RequestState(models.TextChoices):
    RECEIVED = "received"
    IDENTITY_VERIFIED = "identity_verified", "identity verified"
    SEARCHED = "searched"
    # The person's data was erased; the request stays open until the response is sent (completed).
    ERASED = "erased"
    COMPLETED = "completed"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"


OPEN_STATES = (RequestState.RECEIVED, RequestState.IDENTITY_VERIFIED, RequestState.SEARCHED, RequestState.ERASED)


class DeadlineFlag(models.TextChoices):
    ON_TIME = "on_time", "on time"
    DUE_SOON = "due_soon", "due soon"
    OVERDUE = "overdue"


class RetainedQuerySet(models.QuerySet["DataSubjectRequest"]):
    def delete(self) -> Any:  # type: ignore[override]
        raise Conflict("retained", RETENTION_NOTE)


class DataSubjectRequest(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="data_subject_requests")
    regime = models.CharField(max_length=8, choices=Regime.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices, help_text="the manner of the request")
    received_at = models.DateTimeField()
    tz = models.CharField(max_length=64, default="UTC", help_text="the zone of the office that acts")
    received_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The vault reference under which this request's identifiers are sealed; shredded by erasure.
    subject_ref = models.CharField(max_length=64, unique=True)
    identifiers_sealed = models.JSONField(help_text="the identifiers, sealed in the ledger vault (never in clear)")
    identifier_hashes = models.JSONField(help_text="[{kind, key_hash}]: keyed hashes as the subject index keeps them")
    state = models.CharField(max_length=20, choices=RequestState.choices, default=RequestState.RECEIVED)

    # Deadlines (audits.privacy.deadlines), as the last instant of the day in ``tz``.
    confirm_by = models.DateTimeField(null=True, blank=True)
    respond_by = models.DateTimeField()
    extension_notice_by = models.DateTimeField(null=True, blank=True)
    extended = models.BooleanField(default=False)
    extension_reason = models.TextField(blank=True)
    extended_at = models.DateTimeField(null=True, blank=True)
    receipt_confirmed_at = models.DateTimeField(null=True, blank=True)
    deadline_flag = models.CharField(max_length=16, choices=DeadlineFlag.choices, default=DeadlineFlag.ON_TIME)
    flagged_at = models.DateTimeField(null=True, blank=True)

    verified_at = models.DateTimeField(null=True, blank=True)
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    verification_method = models.CharField(max_length=200, blank=True)
    searched_at = models.DateTimeField(null=True, blank=True)
    findings = models.JSONField(default=dict, blank=True, help_text="ids of dataset versions, models, deployments")
    package_sha256 = models.CharField(max_length=64, blank=True, help_text="of the last access package issued")
    package_issued_at = models.DateTimeField(null=True, blank=True)
    letter_sha256 = models.CharField(max_length=64, blank=True, help_text="of the last signed letter (PDF) issued")
    letter_issued_at = models.DateTimeField(null=True, blank=True)
    erased_at = models.DateTimeField(null=True, blank=True)
    erasure = models.JSONField(default=dict, blank=True, help_text="what the erasure did: versions replaced, reviews")

    # The response (CCPA §7101(a): date and nature of the response, basis for a denial).
    responded_at = models.DateTimeField(null=True, blank=True)
    response_nature = models.TextField(blank=True)
    denial_basis = models.TextField(blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RetainedQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["state", "respond_by"], name="privacy_dsr_state_deadline")]
        verbose_name = "data-subject request"

    def __str__(self) -> str:
        return f"data-subject request {self.pk} ({self.regime} {self.kind}, {self.state})"

    @property
    def reference(self) -> str:
        """The short name the admin shows and an officer types to confirm an erasure."""
        return f"DSR-{self.pk}"

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise Conflict("retained", RETENTION_NOTE)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class LegalHold(models.Model):
    """A hold that stops erasure: of a whole project, or of one person (by the keyed hashes of
    their identifiers, so it also covers requests made later)."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="legal_holds")
    identifier_hashes = models.JSONField(
        default=list, blank=True, help_text="[{kind, key_hash}] of the person held; empty: the whole project"
    )
    reason = models.TextField()
    placed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    placed_at = models.DateTimeField(auto_now_add=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    released_at = models.DateTimeField(null=True, blank=True)
    release_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-placed_at"]

    def __str__(self) -> str:
        scope = "person" if self.identifier_hashes else "project"
        return (
            f"legal hold {self.pk} on {scope} in {self.project.slug} ({'released' if self.released_at else 'active'})"
        )


class ReviewOutcome(models.TextChoices):
    RETRAINED = "retrained", "retrained without the erased data"
    KEPT = "kept", "kept; why it need not be retrained is documented"
    RETIRED = "retired", "retired"


class ModelReview(models.Model):
    """A model version trained on a dataset version that an erasure replaced: retrain it, retire
    it, or document why it may stay. Closed by a compliance officer with an outcome."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="model_reviews")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="privacy_reviews")
    request = models.ForeignKey(DataSubjectRequest, on_delete=models.PROTECT, related_name="model_reviews")
    dataset_versions = models.JSONField(help_text="ids of the erased dataset versions it was trained on")
    opened_at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=16, choices=ReviewOutcome.choices, blank=True)
    note = models.TextField(blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["closed_at", "opened_at"]
        constraints = [models.UniqueConstraint(fields=["model_version", "request"], name="privacy_model_review_unique")]

    def __str__(self) -> str:
        return f"review of {self.model_version} after request {self.request_id} ({self.outcome or 'open'})"
