"""Deployments of model versions and the signed grants that let a model server serve them.

A deployment is a governed subject (``deployment``): its digest covers the model's weights, the
environment, the target and the runtime guard, so an approval does not carry over to another
configuration. On approval the service signs a grant with the ledger's keys; the model server
verifies it against the weights it loads. Rows change only through ``serving.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models import Project
from registry.models import ModelVersion, PromptTemplate
from systems.models import AISystem


class Environment(models.TextChoices):
    STAGING = "staging", "staging"
    PRODUCTION = "production", "production"


class DeploymentState(models.TextChoices):
    REQUESTED = "requested", "requested (waiting for approval)"
    STARTING = "starting", "granted, the server is starting"
    HANDED_OFF = "handed_off", "granted, manifests rendered for the serving platform"
    LIVE = "live", "live"
    PAUSED = "paused", "paused by its monitoring (a threshold was crossed)"
    REFUSED = "refused", "the server refused to start"
    FAILED = "failed", "failed"
    EXPIRED = "expired", "grant expired"
    REPLACED = "replaced", "replaced by a newer deployment"
    RETIRED = "retired", "retired"


class Deployment(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="deployments")
    name = models.SlugField(max_length=100, help_text="the service's name; its versions replace each other")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    runtime = models.CharField(max_length=16, default="transformers")
    target = models.JSONField(help_text="gpu_type, gpu_count, replicas, max_batch, max_tokens, max_prompt_chars")
    guard = models.JSONField(help_text="mode (off, redact, block) and entities")
    prompt_template = models.ForeignKey(
        PromptTemplate, on_delete=models.PROTECT, null=True, blank=True, related_name="deployments"
    )
    ai_system = models.ForeignKey(
        AISystem, on_delete=models.PROTECT, null=True, blank=True, related_name="deployments",
        help_text="the AI system this deployment is part of",
    )  # fmt: skip
    transparency = models.JSONField(
        default=dict, blank=True, help_text="how completions are marked as AI-generated (Art. 50)"
    )
    keep_transcripts = models.BooleanField(
        default=False, help_text="keep prompts and completions, as the guard left them, for feedback datasets"
    )
    state = models.CharField(max_length=16, choices=DeploymentState.choices, default=DeploymentState.REQUESTED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    previous = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="the live deployment of the same name and environment this one replaces",
    )  # fmt: skip
    # The running server (the embedded default: a local process the worker started).
    pid = models.IntegerField(null=True, blank=True)
    url = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=50, blank=True)
    cpu_fallback = models.BooleanField(default=False)
    refusal_reason = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # The worker starting the server (common.claims.worker_identity) and when it claimed the start;
    # cleared each time the deployment enters ``starting``, so each grant is started once.
    claimed_by = models.CharField(max_length=200, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name} ({self.environment}) #{self.pk}"


class DeploymentGrant(models.Model):
    """The signed statement a model server checks before it serves: deployment, weights digest,
    environment, target, guard and expiry, as a C2SP signed note by the ledger's keys."""

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="grants")
    grant_id = models.UUIDField(unique=True)
    statement = models.JSONField()
    text = models.TextField(help_text="the signed note")
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    ledger_index = models.BigIntegerField()

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return f"grant {self.grant_id} for {self.deployment}"


class InferenceLogSegment(models.Model):
    """A stretch of a deployment's inference log, summarised into the ledger: how many requests,
    their outcomes and guard decisions, and the SHA-256 of the log's bytes (never one ledger entry
    per request; the log itself holds hashes of inputs and outputs, not the text)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="log_segments")
    start_offset = models.BigIntegerField()
    end_offset = models.BigIntegerField()
    requests = models.PositiveIntegerField()
    summary = models.JSONField()
    sha256 = models.CharField(max_length=64)
    ledger_index = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment_id", "start_offset"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "start_offset"], name="serving_segment_unique_start")
        ]

    def __str__(self) -> str:
        return f"log of {self.deployment} bytes {self.start_offset}-{self.end_offset}"


class FeedbackCategory(models.TextChoices):
    HELPFUL = "helpful", "helpful"
    INCORRECT = "incorrect", "incorrect"
    HARMFUL = "harmful", "harmful"
    PERSONAL_DATA = "personal_data", "discloses personal data"
    UNHELPFUL = "unhelpful", "unhelpful"
    OTHER = "other", "other"


class InferenceFeedback(models.Model):
    """A person's rating of one completion (post-market monitoring). It names the request by the
    id the server returned; no prompt or completion text is stored, and there is no free text
    (a comment field would collect the personal data the inference log is built to avoid)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="feedback")
    request_id = models.UUIDField()
    rating = models.PositiveSmallIntegerField(help_text="1 (bad) to 5 (good)")
    category = models.CharField(max_length=16, choices=FeedbackCategory.choices)
    correction = models.TextField(blank=True, help_text="a better answer the rater suggests")
    given_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment_id", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "request_id", "given_by"], name="serving_feedback_once_per_person"
            ),
            models.CheckConstraint(condition=models.Q(rating__gte=1, rating__lte=5), name="serving_feedback_rating"),
        ]

    def __str__(self) -> str:
        return f"{self.rating}/5 on {self.request_id} ({self.deployment})"


class DeploymentManifest(models.Model):
    """Manifests rendered for a serving platform (KServe or vLLM on Kubernetes) in place of a local
    server: they carry the signed grant, and the platform's container refuses other weights."""

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="manifests")
    grant = models.ForeignKey(DeploymentGrant, on_delete=models.PROTECT, related_name="manifests")
    platform = models.CharField(max_length=16)
    text = models.TextField(help_text="multi-document YAML")
    sha256 = models.CharField(max_length=64)
    ledger_index = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.platform} manifests for {self.deployment}"


class DeploymentClientCredential(models.Model):
    """A credential that lets a client call a deployment's model server (``POST /v1/completions``).

    Issued through one deployment, it holds for the deployment's name and environment in its
    project: the versions that replace it, or that a rollback puts back, accept it too. Only the
    SHA-256 of the credential is stored; the credential is shown once. Rows change only through
    ``serving.services.clients``; servers learn them from the signed client list the service
    writes (``serving.clients``)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="client_credentials")
    name = models.CharField(max_length=100, help_text="who calls with it (an application, a team)")
    prefix = models.CharField(max_length=12, unique=True, help_text="public part of the credential")
    digest = models.CharField(max_length=64, unique=True, help_text="hex SHA-256 of the whole credential")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "deployment client credential"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def state(self) -> str:
        """``revoked``, ``expired`` or ``live``: whether a server accepts it now."""
        from django.utils import timezone

        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "live"


class AlertState(models.TextChoices):
    OPEN = "open", "open (waiting for a review)"
    ACKNOWLEDGED = "acknowledged", "acknowledged (under review)"
    RESOLVED = "resolved", "resolved"


class DeploymentAlert(models.Model):
    """A review opened because a deployment's traffic crossed a bound of its monitoring policy
    (``policies/deployment.monitor.yaml``) in a window. One is open per deployment and metric at a
    time: a later crossing of the same metric updates it (``windows`` lists every window it
    covers) instead of opening another. Rows change only through ``serving.services.alerts``."""

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="alerts")
    metric = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=AlertState.choices, default=AlertState.OPEN)
    observed = models.FloatField(help_text="the metric's value in the latest window that crossed the bound")
    threshold = models.FloatField(help_text="the bound of the policy rule (the largest value still fine)")
    window_start = models.DateTimeField(help_text="the latest window that crossed the bound")
    window_end = models.DateTimeField()
    requests = models.PositiveIntegerField(help_text="requests in that window")
    windows = models.JSONField(default=list, help_text="start of every window the review covers (ISO 8601)")
    policy_hash = models.CharField(max_length=80)
    rule = models.JSONField(help_text="the monitoring rule that applied")
    paused = models.BooleanField(default=False, help_text="whether the crossing paused the deployment")
    notified = models.JSONField(default=list, help_text="ids of the users mailed when it opened")
    opened_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.TextField(blank=True)
    ledger_index = models.BigIntegerField(help_text="the ledger entry that opened it")

    class Meta:
        ordering = ["-opened_at"]
        verbose_name = "deployment alert"
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "metric"], condition=~models.Q(state="resolved"),
                name="serving_alert_one_open_per_metric",
            )
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.metric} above {self.threshold:g} on {self.deployment} ({self.state})"
