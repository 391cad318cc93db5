"""Projects, service accounts and API tokens."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
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


_phone_number = RegexValidator(
    r"^\+?[0-9][0-9 ()./-]{3,38}[0-9]$",
    "Enter a telephone number of digits, spaces and + ( ) . / - only, such as +33 1 23 45 67 89.",
)


class OrganisationProfile(models.Model):
    """The organisation's facts that compliance reports print (GDPR Art. 13, 27, 30, 32 and 37;
    CCPA § 1798.130): one row (id 1), governed data written only by ``organisation_profile_update``,
    which checks that the actor is a global admin and ledgers every change
    (``organisation.profile_updated``, old and new values; ``ledger_index`` cites the last one).

    Every field is a business contact detail or a statement of the organisation; none is about a
    data subject. Read it through ``governance.selectors.organisation_profile``; what a report still
    lacks is ``missing_for_reports()``."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    # The controller (Art. 30(1)(a), Art. 13(1)(a)).
    controller_name = models.CharField("controller's legal name", max_length=200, blank=True)
    controller_address = models.TextField("controller's postal address", max_length=500, blank=True)
    controller_email = models.EmailField("controller's contact e-mail", blank=True)
    controller_phone = models.CharField(
        "controller's contact phone", max_length=40, blank=True, validators=[_phone_number]
    )
    # The representative in the Union (Art. 27), or why none is required (Art. 27(2)).
    representative_name = models.CharField("EU representative's name", max_length=200, blank=True)
    representative_contact = models.CharField(
        "EU representative's contact", max_length=300, blank=True, help_text="address, e-mail or phone"
    )
    representative_not_required_reason = models.TextField(
        "why no EU representative is required", max_length=1000, blank=True,
        help_text="e.g. the controller is established in the Union (Art. 27(1)), or the processing is "
        "occasional and low-risk (Art. 27(2)(a))",
    )  # fmt: skip
    # The data protection officer (Art. 37), or why none is designated.
    dpo_name = models.CharField("data protection officer's name", max_length=200, blank=True)
    dpo_contact = models.CharField(
        "data protection officer's contact", max_length=300, blank=True,
        help_text="a role address (dpo@…) rather than a personal one: it is published (Art. 37(7))",
    )  # fmt: skip
    dpo_not_designated_reason = models.TextField(
        "why no data protection officer is designated", max_length=1000, blank=True,
        help_text="none of the cases of Art. 37(1) applies, and why",
    )  # fmt: skip
    # The lead supervisory authority (Art. 56; Art. 13(2)(d): the right to lodge a complaint).
    supervisory_authority_name = models.CharField("lead supervisory authority", max_length=200, blank=True)
    supervisory_authority_address = models.TextField("supervisory authority's address", max_length=500, blank=True)
    supervisory_authority_website = models.URLField("supervisory authority's website", blank=True)
    # Art. 32 (and Art. 30(1)(g)): the technical and organisational measures.
    security_measures = models.TextField("technical and organisational security measures", max_length=5000, blank=True)
    # CCPA § 1798.130(a)(1): the methods for submitting consumer requests (optional).
    ccpa_request_email = models.EmailField("CCPA consumer requests: e-mail", blank=True)
    ccpa_request_phone = models.CharField(
        "CCPA consumer requests: toll-free number", max_length=40, blank=True, validators=[_phone_number]
    )
    updated_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    ledger_index = models.BigIntegerField(
        null=True, blank=True, help_text="the ledger entry of the last update (organisation.profile_updated)"
    )

    # The fields people fill in, in the order forms and the ledger show them.
    EDITABLE = (
        "controller_name", "controller_address", "controller_email", "controller_phone",
        "representative_name", "representative_contact", "representative_not_required_reason",
        "dpo_name", "dpo_contact", "dpo_not_designated_reason",
        "supervisory_authority_name", "supervisory_authority_address", "supervisory_authority_website",
        "security_measures", "ccpa_request_email", "ccpa_request_phone",
    )  # fmt: skip

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="organisation_profile_single_row")]

    def __str__(self) -> str:
        return self.controller_name or "organisation profile (not filled in)"

    def clean(self) -> None:
        """One choice each for the EU representative and the DPO: named with a contact, or a reason
        why there is none; never both. (The admin's form and ``organisation_profile_update`` both
        run it through ``full_clean``.)"""
        from django.core.exceptions import ValidationError

        problems: dict[str, list[str]] = {}
        for slot, who, reason_field in (
            ("representative", "EU representative", "representative_not_required_reason"),
            ("dpo", "data protection officer", "dpo_not_designated_reason"),
        ):
            name, contact, reason = (getattr(self, f) for f in (f"{slot}_name", f"{slot}_contact", reason_field))
            if name and not contact:
                problems.setdefault(f"{slot}_contact", []).append(f"Give the {who}'s contact with their name.")
            if contact and not name:
                problems.setdefault(f"{slot}_name", []).append(f"Give the {who}'s name with their contact.")
            if reason and (name or contact):
                problems.setdefault(reason_field, []).append(f"Name the {who} or say why there is none, not both.")
        if problems:
            raise ValidationError(problems)

    def missing_for_reports(self) -> list[str]:
        """What a report needs and the profile lacks, in words (empty: nothing is missing)."""
        missing = []
        if not self.controller_name:
            missing.append("the controller's legal name")
        if not (self.controller_email or self.controller_phone):
            missing.append("the controller's contact (e-mail or phone)")
        if not ((self.representative_name and self.representative_contact) or self.representative_not_required_reason):
            missing.append("the EU representative (name and contact), or why none is required")
        if not ((self.dpo_name and self.dpo_contact) or self.dpo_not_designated_reason):
            missing.append("the data protection officer (name and contact), or why none is designated")
        if not self.supervisory_authority_name:
            missing.append("the lead supervisory authority")
        if not self.security_measures:
            missing.append("the technical and organisational security measures")
        return missing

    def controller_contact(self) -> str:
        """The controller's e-mail and phone, as one line for a report."""
        return "; ".join(value for value in (self.controller_email, self.controller_phone) if value)

    def representative_shown(self) -> str:
        """The EU representative as a report prints it: name and contact, or why none is required."""
        if self.representative_name:
            return f"{self.representative_name}, {self.representative_contact}"
        if self.representative_not_required_reason:
            return f"not required: {self.representative_not_required_reason}"
        return ""

    def dpo_shown(self) -> str:
        """The data protection officer as a report prints it: name and contact, or why none is designated."""
        if self.dpo_name:
            return f"{self.dpo_name}, {self.dpo_contact}"
        if self.dpo_not_designated_reason:
            return f"not designated: {self.dpo_not_designated_reason}"
        return ""

    def supervisory_authority_shown(self) -> str:
        """The lead supervisory authority with its address and website, as one line."""
        parts = (
            self.supervisory_authority_name,
            self.supervisory_authority_address,
            self.supervisory_authority_website,
        )
        return ", ".join(" ".join(part.split()) for part in parts if part)


class PiiListKind(models.TextChoices):
    ALLOW = "allow", "allow (not personal data)"
    DENY = "deny", "deny (report as personal data)"


class PiiListMatch(models.TextChoices):
    VALUE = "value", "a value, by its keyed hash"
    PATTERN = "pattern", "a regular expression"
    TERM = "term", "a term (whole word, any case)"


class PiiListEntry(models.Model):
    """One rule of a project's PII lists, applied to every scan of the project's datasets
    (``registry.pii_lists``): an allow entry drops findings whose value is a given one (only its
    keyed hash is kept, HMAC with ``DATA_SUBJECT_INDEX_KEY``) or matches a regular expression whole,
    for one entity type or for all (``entity`` blank); a deny entry reports a term or what a
    regular expression matches as ``entity``. Governed: written only by
    ``governance.services.pii_list_entry_add`` and ``pii_list_entry_remove``, each ledgered; a
    removed entry keeps its row (``removed_at``) and is no longer applied."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="pii_list_entries")
    kind = models.CharField(max_length=8, choices=PiiListKind.choices)
    match = models.CharField(max_length=8, choices=PiiListMatch.choices)
    entity = models.CharField(max_length=64, blank=True, help_text="the entity type; blank: every type (allow only)")
    pattern = models.CharField(max_length=200, blank=True, help_text="the regular expression or the term")
    value_hash = models.CharField(max_length=64, blank=True, help_text="HMAC-SHA256 of the normalised value")
    reason = models.TextField(max_length=1000)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    ledger_index = models.BigIntegerField(help_text="the ledger entry that added it (pii_list.entry_added)")
    # A removed entry stays, no longer applied: who removed it, when and why, as the ledger says.
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    removal_reason = models.TextField(max_length=1000, blank=True)
    removal_ledger_index = models.BigIntegerField(
        null=True, blank=True, help_text="the ledger entry that removed it (pii_list.entry_removed)"
    )

    class Meta:
        ordering = ["project", "kind", "entity", "match", "pattern", "value_hash"]
        verbose_name = "PII list entry"
        verbose_name_plural = "PII list entries"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "kind", "match", "entity", "pattern", "value_hash"],
                condition=models.Q(removed_at__isnull=True),
                name="pii_list_entry_live_once",
            ),
            models.CheckConstraint(
                condition=(models.Q(match="value") & ~models.Q(value_hash="") & models.Q(pattern=""))
                | (~models.Q(match="value") & models.Q(value_hash="") & ~models.Q(pattern="")),
                name="pii_list_entry_one_rule",
            ),
        ]

    def __str__(self) -> str:
        rule = f"value {self.value_hash[:12]}…" if self.match == PiiListMatch.VALUE else f"{self.match} {self.pattern}"
        return f"{self.kind} {self.entity or 'any type'}: {rule}"
