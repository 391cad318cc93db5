"""Incidents of AI systems and deployments (EU AI Act Art. 73).

An incident is registered by any member of its project who may act there (auditors read), linked
to the AI systems and deployments it concerns (of its own project only), classified by a
compliance officer as serious or not (Art. 3(49), Art. 3(61)), reported to the market surveillance
authority within the Art. 73 clock when serious, and closed with its root cause and the corrective
action taken. The clock starts when the provider became aware of it (``aware_at``).

Free text (title, description, root cause, corrective action) may name the people harmed: the
ledger holds it sealed in the vault under the incident's own reference (``text_ref``), never in
clear, so it can be crypto-shredded there. Rows change only through ``incidents.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models import Project
from serving.models import Deployment
from systems.models import AISystem


class IncidentState(models.TextChoices):
    OPEN = "open", "open"
    REPORTED = "reported", "reported to the market surveillance authority"
    CLOSED = "closed", "closed"


class SeriousKind(models.TextChoices):
    """What makes an incident serious: Art. 3(49) (a)-(d) and Art. 3(61)."""

    DEATH = "death", "death of a person (Art. 3(49)(a))"
    HEALTH = "health", "serious harm to a person's health (Art. 3(49)(a))"
    CRITICAL_INFRASTRUCTURE = (
        "critical_infrastructure",
        "serious and irreversible disruption of critical infrastructure (Art. 3(49)(b))",
    )
    FUNDAMENTAL_RIGHTS = (
        "fundamental_rights",
        "infringement of Union law obligations protecting fundamental rights (Art. 3(49)(c))",
    )
    PROPERTY_OR_ENVIRONMENT = "property_or_environment", "serious harm to property or the environment (Art. 3(49)(d))"
    WIDESPREAD_INFRINGEMENT = "widespread_infringement", "widespread infringement (Art. 3(61))"


# The free text that may name the people harmed: sealed in the ledger, blanked by an erasure.
FREE_TEXT_FIELDS = ("title", "description", "root_cause", "corrective_action")


class Incident(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="incidents")
    number = models.PositiveIntegerField(help_text="the incident's number in its project (INC-<number>)")
    title = models.CharField(max_length=200)
    description = models.TextField()
    ai_systems = models.ManyToManyField(AISystem, related_name="incidents", blank=True)
    deployments = models.ManyToManyField(Deployment, related_name="incidents", blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    aware_at = models.DateTimeField(help_text="when the provider became aware of it: the Art. 73 clock starts here")
    serious = models.BooleanField(null=True, blank=True, help_text="null until classified")
    serious_kind = models.CharField(max_length=32, choices=SeriousKind.choices, blank=True)
    classified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    classified_at = models.DateTimeField(null=True, blank=True)
    report_due_at = models.DateTimeField(null=True, blank=True, help_text="Art. 73 deadline; null unless serious")
    state = models.CharField(max_length=16, choices=IncidentState.choices, default=IncidentState.OPEN)
    authority_reported_at = models.DateTimeField(
        null=True, blank=True, help_text="the first report to the authority (an initial one, Art. 73(5), counts)"
    )
    authority_reference = models.CharField(max_length=200, blank=True)
    authority_completed_at = models.DateTimeField(
        null=True, blank=True, help_text="the complete report that followed an initial one (Art. 73(5)), or the first"
    )
    root_cause = models.TextField(blank=True)
    corrective_action = models.TextField(blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", help_text="who registered it"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    reminded_at = models.DateTimeField(
        null=True, blank=True, help_text="when the worker reminded the officers at half the clock"
    )
    overdue_recorded_at = models.DateTimeField(
        null=True, blank=True, help_text="when the worker recorded that the deadline passed unreported"
    )
    text_ref = models.CharField(
        max_length=64, unique=True, help_text="the vault reference the ledger seals this incident's free text under"
    )

    class Meta:
        ordering = ["project__slug", "-number"]
        constraints = [models.UniqueConstraint(fields=["project", "number"], name="incidents_one_number_per_project")]
        indexes = [models.Index(fields=["state", "report_due_at"], name="incidents_open_clock")]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.reference}"

    @property
    def reference(self) -> str:
        return f"INC-{self.number}"
