"""The register of AI systems (use cases) and their EU AI Act risk classification.

An AI system is what a governance team is asked about first: a purpose, an owner, the deployers
who use it, and the deployments (and so the model versions) that make it up. Its risk class comes
from a classification questionnaire (prohibited practices, Annex III areas, Art. 6(3) exceptions,
transparency duties, general-purpose AI use); each set of answers is a numbered classification,
a governed subject (``ai_system_classification``) approved like any other, and the system's class
is that of its latest approved classification. Rows change only through ``systems.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models import Project


class RiskClass(models.TextChoices):
    UNCLASSIFIED = "unclassified", "not classified yet"
    PROHIBITED = "prohibited", "prohibited practice (Art. 5)"
    HIGH = "high", "high-risk (Art. 6, Annex III)"
    LIMITED = "limited", "transparency obligations (Art. 50)"
    MINIMAL = "minimal", "minimal risk"


class AISystem(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="ai_systems")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    purpose = models.TextField(help_text="the intended purpose (Art. 3(12))")
    description = models.TextField(blank=True)
    human_oversight = models.TextField(
        blank=True, help_text="how people oversee the system, and who may stop it (Art. 14, Art. 26(2))"
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    deployers = models.JSONField(default=list, blank=True, help_text="who uses the system under their authority")
    risk_class = models.CharField(
        max_length=16, choices=RiskClass.choices, default=RiskClass.UNCLASSIFIED,
        help_text="the class of the latest approved classification",
    )  # fmt: skip
    classification = models.ForeignKey(
        "AISystemClassification", on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="the latest approved classification",
    )  # fmt: skip
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project__slug", "slug"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="systems_one_slug_per_project")]
        verbose_name = "AI system"

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"


class ClassificationState(models.TextChoices):
    DRAFT = "draft", "draft"
    PENDING = "pending", "waiting for approval"
    APPROVED = "approved", "approved"
    REJECTED = "rejected", "rejected"
    WITHDRAWN = "withdrawn", "withdrawn"


class AISystemClassification(models.Model):
    system = models.ForeignKey(AISystem, on_delete=models.PROTECT, related_name="classifications")
    number = models.PositiveIntegerField()
    answers = models.JSONField(help_text="the questionnaire's answers")
    risk_class = models.CharField(max_length=16, choices=RiskClass.choices)
    reasons = models.JSONField(default=list, help_text="why the answers give this class, article by article")
    state = models.CharField(max_length=16, choices=ClassificationState.choices, default=ClassificationState.DRAFT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["system", "-number"]
        constraints = [models.UniqueConstraint(fields=["system", "number"], name="systems_one_number_per_system")]
        verbose_name = "AI system classification"

    def __str__(self) -> str:
        return f"{self.system} classification {self.number}"
