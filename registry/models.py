"""Datasets and their content-addressed versions, PII scans and the data-subject index."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models import Project


class LawfulBasis(models.TextChoices):
    """GDPR Art. 6(1)."""

    CONSENT = "consent", "(a) consent"
    CONTRACT = "contract", "(b) performance of a contract"
    LEGAL_OBLIGATION = "legal_obligation", "(c) legal obligation"
    VITAL_INTERESTS = "vital_interests", "(d) vital interests"
    PUBLIC_TASK = "public_task", "(e) public task"
    LEGITIMATE_INTERESTS = "legitimate_interests", "(f) legitimate interests"


class Dataset(models.Model):
    """A dataset and what a record of processing (GDPR Art. 30) needs to know about it."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="datasets")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    purpose = models.TextField()
    lawful_basis = models.CharField(max_length=32, choices=LawfulBasis.choices)
    data_subject_categories = models.JSONField(default=list, blank=True)
    personal_data_categories = models.JSONField(default=list, blank=True)
    recipients = models.JSONField(default=list, blank=True)
    third_country_transfers = models.JSONField(default=list, blank=True)
    retention_days = models.PositiveIntegerField()
    source = models.CharField(max_length=500)
    data_steward = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project__slug", "slug"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="registry_dataset_unique_slug")]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"


class PiiVerdict(models.TextChoices):
    PENDING = "pending"
    NONE = "none"
    FOUND = "found"
    FAILED = "failed"


class Review(models.TextChoices):
    UNREVIEWED = "unreviewed"
    CONFIRMED = "confirmed", "personal data confirmed; use allowed under the dataset's lawful basis"
    FALSE_POSITIVE = "false_positive", "no personal data after all"
    ANONYMISATION_REQUIRED = "anonymisation_required", "use only an anonymised derived version"


class DatasetVersion(models.Model):
    """An immutable version: the bytes are in the artifact store under their SHA-256."""

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    format = models.CharField(max_length=16)
    original_name = models.CharField(max_length=255)
    record_count = models.PositiveIntegerField()
    duplicate_count = models.PositiveIntegerField()
    pii_verdict = models.CharField(max_length=16, choices=PiiVerdict.choices, default=PiiVerdict.PENDING)
    review = models.CharField(max_length=32, choices=Review.choices, default=Review.UNREVIEWED)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.TextField(blank=True)
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="derived",
        help_text="the version this one was derived from",
    )  # fmt: skip
    derivation = models.CharField(max_length=32, blank=True, help_text="how it was derived: deduplicated, ...")
    # Set when an erasure (GDPR Art. 17, CCPA delete) replaced this version by one without a
    # person's records: the blob is deleted, the row stays for lineage and the ledger.
    erased_at = models.DateTimeField(null=True, blank=True)
    erased_reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="registry_version_unique_number"),
            models.UniqueConstraint(fields=["dataset", "sha256"], name="registry_version_unique_content"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset} v{self.number}"


class ScanStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PiiScan(models.Model):
    """One Presidio scan of a dataset version. Findings hold types, counts and locations only."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="scans")
    status = models.CharField(max_length=16, choices=ScanStatus.choices, default=ScanStatus.QUEUED)
    requested_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    engine = models.JSONField(default=dict, blank=True)
    records_scanned = models.PositiveIntegerField(default=0)
    findings = models.JSONField(default=dict, blank=True)
    # The worker running it (common.claims.worker_identity) and when it claimed it, or when the
    # reaper last queued it again: a scan whose worker died is taken over, not left running.
    claimed_by = models.CharField(max_length=200, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Progress while it runs: the sum of its shards' records done, as of ``progress_at``.
    shard_count = models.PositiveIntegerField(default=0)
    records_total = models.PositiveIntegerField(default=0)
    records_done = models.PositiveIntegerField(default=0)
    progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        verbose_name = "PII scan"

    def __str__(self) -> str:
        return f"scan {self.pk} of {self.version} ({self.status})"

    @property
    def rate(self) -> float | None:
        """Records scanned per second since it started (all its shards together)."""
        until = self.finished_at or self.progress_at
        if self.started_at is None or until is None:
            return None
        seconds = (until - self.started_at).total_seconds()
        done = self.records_scanned if self.status == ScanStatus.SUCCEEDED else self.records_done
        return round(done / seconds, 1) if seconds > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far, while it runs."""
        rate = self.rate
        if self.status != ScanStatus.RUNNING or not rate:
            return None
        return round(max(0, self.records_total - self.records_done) / rate, 1)


class PiiScanShard(models.Model):
    """One range of a scan's records (by position: ``first_record`` up to, not including,
    ``end_record``; the last shard reads to the end of the file), scanned by one Celery task
    (``registry.pii_scan_shard``). ``result`` is its part of the findings (counts, the number of
    records each type was found in, the first samples), kept until the last shard ends and the
    scan's summary is merged from all of them."""

    scan = models.ForeignKey(PiiScan, on_delete=models.PROTECT, related_name="shards")
    index = models.PositiveIntegerField()
    first_record = models.PositiveIntegerField()
    end_record = models.PositiveIntegerField()
    last = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=ScanStatus.choices, default=ScanStatus.QUEUED)
    queued_at = models.DateTimeField(auto_now_add=True)
    # The worker scanning it (common.claims), renewed with each progress update.
    claimed_by = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    records_done = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["scan_id", "index"]
        verbose_name = "PII scan shard"
        constraints = [models.UniqueConstraint(fields=["scan", "index"], name="registry_scan_shard_unique_index")]

    def __str__(self) -> str:
        return f"shard {self.index} of scan {self.scan_id} ({self.status})"


class FindingState(models.TextChoices):
    """A data steward's judgement of one finding of a scan."""

    FALSE_POSITIVE = "false_positive", "not personal data"
    PERSONAL_DATA = "personal_data", "personal data"


class PiiFindingMark(models.Model):
    """A data steward's mark on one finding of a scan: ``finding`` is its number in the scan's
    findings (``registry.rules.scan_findings``), which never change once the scan is recorded.
    The mark holds no text of the record: the finding is a location, the mark a judgement."""

    scan = models.ForeignKey(PiiScan, on_delete=models.PROTECT, related_name="marks")
    finding = models.PositiveIntegerField()
    state = models.CharField(max_length=32, choices=FindingState.choices)
    marked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    marked_at = models.DateTimeField()

    class Meta:
        ordering = ["scan_id", "finding"]
        constraints = [models.UniqueConstraint(fields=["scan", "finding"], name="registry_finding_mark_unique")]

    def __str__(self) -> str:
        return f"finding {self.finding} of scan {self.scan_id}: {self.state}"


class DataSubjectIndexEntry(models.Model):
    """An identifier found by a scan, as a keyed hash (HMAC-SHA256 with a server secret): a
    data-subject request finds the versions that hold a person without the identifier in clear."""

    key_hash = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=32)
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="subject_index")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key_hash", "kind", "version"], name="registry_subject_index_unique")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key_hash[:12]}… in {self.version_id}"


class Model(models.Model):
    """A model family in a project; its versions hold the weights."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="models")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project__slug", "slug"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="registry_model_unique_slug")]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"


class ModelVersion(models.Model):
    """Weights by content: every file is a blob in the artifact store, and the weights digest is
    the SHA-256 over the sorted ``path digest`` lines. Lineage: the base model version and the
    dataset versions it was trained on."""

    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    weights_digest = models.CharField(max_length=71)
    files = models.JSONField(help_text="relative path -> SHA-256 of the file")
    size_bytes = models.BigIntegerField()
    source = models.CharField(max_length=500)
    base = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="derived")
    dataset_versions = models.ManyToManyField(DatasetVersion, blank=True, related_name="model_versions")
    # Its mirror in the MLflow model registry (filled by the registry.mlflow_mirror task).
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_model_name = models.CharField(max_length=256, blank=True)
    mlflow_version = models.CharField(max_length=32, blank=True)
    mlflow_alias = models.CharField(max_length=256, blank=True)
    # How it was made, when the service made it: the fine-tune run, its MLflow run, the code
    # version and the digests of the dataset versions as they were trained on.
    lineage = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="registry_model_version_unique_number"),
            models.UniqueConstraint(fields=["model", "weights_digest"], name="registry_model_version_unique_weights"),
        ]

    def __str__(self) -> str:
        return f"{self.model} v{self.number}"


class PromptTemplate(models.Model):
    """A prompt template or chain, versioned by content."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="prompt_templates")
    slug = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=[("template", "template"), ("chain", "chain")], default="template")
    body = models.JSONField(help_text="the template text, or the chain's steps")
    content_digest = models.CharField(max_length=71)
    intended_use = models.TextField()
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project__slug", "slug", "version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "slug", "version"], name="registry_prompt_unique_version"),
            models.UniqueConstraint(
                fields=["project", "slug", "content_digest"], name="registry_prompt_unique_content"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug} v{self.version}"
