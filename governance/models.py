"""Projects, service accounts and API tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.roles import ROLE_DESCRIPTIONS


class Project(models.Model):
    """A workspace that owns assets; every permission of the service is scoped to one."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        permissions = [
            (role.codename, f"Holds the {role.value} role: {text}") for role, text in ROLE_DESCRIPTIONS.items()
        ]

    def __str__(self) -> str:
        return self.slug


class ServiceAccount(models.Model):
    """A non-human principal (CI, workers) that authenticates by API token only.

    The system itself acts through the service account named ``system``.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="service_account")
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="owned_service_accounts"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.user.get_username()


class ApiToken(models.Model):
    """An API token. Only the SHA-256 of the token is stored; the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, help_text="public part of the token, for lookup")
    digest = models.CharField(max_length=64, unique=True, help_text="hex SHA-256 of the whole token")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"  # the admin would say "Api tokens"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def state(self) -> str:
        """``revoked``, ``expired`` or ``live``: whether the token authenticates now."""
        from django.utils import timezone

        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "live"


class ApprovalState(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    # Was approved; its subject no longer matches what was approved (it changed, or was erased).
    # Final: the approval never counts again, even if the subject returns to the approved digest.
    LAPSED = "lapsed"


class ApprovalRequest(models.Model):
    """A request to perform ``action`` on one governed subject, bound to the subject's digest.

    ``slots`` is the policy rule's approval slots at submission, so a later policy change never
    rewrites what this request needs; the policy-set hash is recorded with it and every decision.
    """

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="approval_requests")
    action = models.CharField(max_length=100)
    subject_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=64)
    subject_digest = models.CharField(max_length=71)
    context = models.JSONField(default=dict, blank=True)
    rule = models.JSONField()
    policy_hash = models.CharField(max_length=71)
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    comment = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=ApprovalState.choices, default=ApprovalState.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    lapsed_at = models.DateTimeField(null=True, blank=True, help_text="when the approval was found not to match")
    lapse_reason = models.TextField(blank=True, help_text="why the approval lapsed, in words")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["subject_type", "subject_id", "action"], name="gov_approval_subject")]
        constraints = [
            # One pending request per action on a subject, also when two submit at once.
            models.UniqueConstraint(
                fields=["subject_type", "subject_id", "action"],
                condition=models.Q(state="pending"),
                name="gov_approval_one_pending",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.subject_type}:{self.subject_id} ({self.state})"


class ApprovalDecision(models.Model):
    """One person's decision on one request, filling one slot (or rejecting it)."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="decisions")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=32)
    decision = models.CharField(max_length=8, choices=[("approve", "approve"), ("reject", "reject")])
    reason = models.TextField()
    subject_digest = models.CharField(max_length=71)
    policy_hash = models.CharField(max_length=71)
    ledger_index = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver"], name="gov_decision_one_per_person"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} by {self.approver_id} as {self.role} on #{self.request_id}"


class PolicySetRecord(models.Model):
    """Each distinct policy set the service has decided under; a new one is a ledger entry."""

    hash = models.CharField(max_length=71, unique=True)
    files = models.JSONField()
    first_used_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.hash


class BreakGlassReview(models.Model):
    """An emergency approval by a platform admin, to be reviewed by a compliance officer in time.
    A review closed as ``revoked`` takes the approval away."""

    request = models.OneToOneField(ApprovalRequest, on_delete=models.PROTECT, related_name="break_glass")
    admin = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    justification = models.TextField()
    opened_at = models.DateTimeField(auto_now_add=True)
    due_at = models.DateTimeField()
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, blank=True, choices=[("upheld", "upheld"), ("revoked", "revoked")])
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["due_at"]
        verbose_name = "break-glass review"

    def __str__(self) -> str:
        return f"break-glass review of #{self.request_id} ({self.outcome or 'open'})"


class SecondFactorLock(models.Model):
    """Wrong second-factor codes offered for one account in a row, and the lock they led to.

    At ``MFA_LOCKOUT_FAILURES`` wrong codes the account is locked: the admin's second-factor
    pages take no code for it, the right one included, until a platform admin lifts the lock
    (``staff_mfa_unlock``). A right code sets the count back to 0. Written by the services of
    governance/mfa.py only; the lock and its lifting are ledger entries."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="second_factor_lock")
    failures = models.PositiveIntegerField(default=0, help_text="wrong codes in a row")
    locked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "second-factor lock"

    def __str__(self) -> str:
        return f"second factor of {self.user_id} ({'locked' if self.locked_at else 'open'})"
