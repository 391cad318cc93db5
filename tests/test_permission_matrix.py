"""Every API endpoint, every role (anonymous included), an object of the caller's project and one
of another project. The endpoints come from the URL resolver: an endpoint without a row in MATRIX
fails the suite.

Expected outcome per cell: 401 (anonymous), 403 (a member whose role may not do it), 404 (an
object of a project the caller holds no role in: it looks like no object at all), or OK: the
request got past authentication and authorisation (2xx, or 400/409/422 about the input or the
object's state, never 401/403/404).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver

from audits.ledger.services import checkpoint_create
from governance.roles import Role
from governance.services import (
    api_token_create,
    approval_request_submit,
    project_create,
    project_role_grant,
)
from registry.models import PiiScan
from registry.services import (
    dataset_version_upload,
    model_create,
    model_version_register_folder,
    pii_scan_run,
    prompt_template_register,
)
from registry.tests.conftest import make_dataset

ROLES = ["anonymous", *[r.value for r in Role]]
MEMBERS = [r.value for r in Role]
PUBLIC, AUTHENTICATED = "public", "authenticated"
AI_SYSTEM_REGISTRARS = ["ml_engineer", "compliance_officer", "platform_admin"]  # systems.services.REGISTRAR_ROLES

# (route, method) -> (roles allowed in their own project, whether another project's object is hidden)
MATRIX: dict[tuple[str, str], tuple[list[str] | str, bool]] = {
    ("api/schema/", "GET"): (PUBLIC, False),
    ("api/docs/", "GET"): (PUBLIC, False),
    ("api/v1/me", "GET"): (AUTHENTICATED, False),
    ("api/v1/projects/", "GET"): (AUTHENTICATED, False),
    ("api/v1/projects/<slug:slug>", "GET"): (MEMBERS, True),
    ("api/v1/approvals/", "GET"): (AUTHENTICATED, False),
    ("api/v1/approvals/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/approvals/<int:pk>/approve", "POST"): (["data_steward", "ml_engineer"], True),
    ("api/v1/approvals/<int:pk>/reject", "POST"): (["data_steward", "ml_engineer"], True),
    ("api/v1/approvals/<int:pk>/withdraw", "POST"): (["ml_engineer"], True),
    ("api/v1/approvals/<int:pk>/break-glass", "POST"): (["platform_admin"], True),
    ("api/v1/break-glass-reviews/", "GET"): (AUTHENTICATED, False),
    ("api/v1/break-glass-reviews/<int:pk>/close", "POST"): (["compliance_officer"], True),
    ("api/v1/tokens/", "GET"): (AUTHENTICATED, False),
    # The matrix calls with tokens, and a token never creates tokens (an admin session with MFA does).
    ("api/v1/tokens/", "POST"): ([], False),
    # A service account's token in the project: its platform admin revokes it; others see no such token.
    ("api/v1/tokens/<slug:prefix>/revoke", "POST"): (["platform_admin"], True),
    ("api/v1/ledger/checkpoint", "GET"): (PUBLIC, False),
    ("api/v1/ledger/keys", "GET"): (PUBLIC, False),
    ("api/v1/ledger/proofs/inclusion", "GET"): (PUBLIC, False),
    ("api/v1/ledger/proofs/consistency", "GET"): (PUBLIC, False),
    # A project's auditors and compliance officers read its entries; another project's entry is no
    # entry (the list's scoping: test_ledger_lists_only_the_callers_projects below).
    ("api/v1/ledger/entries/", "GET"): (["auditor", "compliance_officer"], False),
    ("api/v1/ledger/entries/<int:index>", "GET"): (["auditor", "compliance_officer"], True),
    # Who reads an entry gets its receipt; 404 otherwise (audits/ledger/receipts.py).
    ("api/v1/ledger/entries/<int:index>/receipt", "GET"): (["auditor", "compliance_officer"], True),
    # The inventory at a time: who reads the ledger's entries, each their projects' facts
    # (audits/reports/inventory/, scoping in audits/reports/tests/test_inventory.py).
    ("api/v1/inventory", "GET"): (["auditor", "compliance_officer"], False),
    ("api/v1/projects/<slug:slug>/datasets/", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/datasets/", "POST"): (["data_steward"], True),
    ("api/v1/projects/<slug:slug>/data-subjects/lookup", "POST"): (["compliance_officer"], True),
    ("api/v1/datasets/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/datasets/<int:pk>/versions/", "GET"): (MEMBERS, True),
    ("api/v1/datasets/<int:pk>/versions/", "POST"): (["data_steward", "ml_engineer"], True),
    ("api/v1/datasets/<int:pk>/versions/register-path", "POST"): (["data_steward", "ml_engineer"], True),
    ("api/v1/dataset-versions/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/dataset-versions/<int:pk>/review", "POST"): (["data_steward"], True),
    ("api/v1/dataset-versions/<int:pk>/scan", "POST"): (["data_steward", "ml_engineer"], True),
    ("api/v1/dataset-versions/<int:pk>/deduplicate", "POST"): (["data_steward", "ml_engineer"], True),
    ("api/v1/dataset-versions/<int:pk>/anonymise", "POST"): (["data_steward"], True),
    ("api/v1/dataset-versions/<int:pk>/lineage", "GET"): (MEMBERS, True),
    ("api/v1/dataset-versions/<int:pk>/submit", "POST"): (["data_steward", "ml_engineer", "platform_admin"], True),
    ("api/v1/projects/<slug:slug>/models/", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/models/", "POST"): (["ml_engineer"], True),
    ("api/v1/models/<int:pk>/versions/", "GET"): (MEMBERS, True),
    ("api/v1/models/<int:pk>/versions/", "POST"): (["ml_engineer"], True),
    ("api/v1/model-versions/<int:pk>/lineage", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/prompt-templates/", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/prompt-templates/", "POST"): (["ml_engineer"], True),
    ("api/v1/projects/<slug:slug>/fine-tune-runs/", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/fine-tune-runs/", "POST"): (["ml_engineer"], True),
    ("api/v1/projects/<slug:slug>/gpu-quota", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/gpu-quota", "PUT"): (["platform_admin"], True),
    ("api/v1/fine-tune-runs/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/fine-tune-runs/<int:pk>/start", "POST"): (["ml_engineer"], True),
    ("api/v1/fine-tune-runs/<int:pk>/cancel", "POST"): (["ml_engineer", "platform_admin"], True),
    ("api/v1/fine-tune-runs/<int:pk>/submit", "POST"): (["data_steward", "ml_engineer", "platform_admin"], True),
    # Optimisation (int8 quantisation) runs: ML engineers request and start them again.
    ("api/v1/projects/<slug:slug>/optimisation-runs/", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/optimisation-runs/", "POST"): (["ml_engineer"], True),
    ("api/v1/optimisation-runs/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/optimisation-runs/<int:pk>/start", "POST"): (["ml_engineer"], True),
    ("api/v1/optimisation-runs/<int:pk>/cancel", "POST"): (["ml_engineer", "platform_admin"], True),
    ("api/v1/optimisation-runs/<int:pk>/submit", "POST"): (["data_steward", "ml_engineer", "platform_admin"], True),
    ("api/v1/model-versions/<int:pk>/security-scans/", "GET"): (MEMBERS, True),
    ("api/v1/model-versions/<int:pk>/security-scans/", "POST"): (["ml_engineer", "security_reviewer"], True),
    ("api/v1/model-versions/<int:pk>/bias-evaluations/", "GET"): (MEMBERS, True),
    ("api/v1/model-versions/<int:pk>/bias-evaluations/", "POST"): (["ml_engineer", "fairness_reviewer"], True),
    ("api/v1/model-versions/<int:pk>/submit", "POST"): (["data_steward", "ml_engineer", "platform_admin"], True),
    ("api/v1/security-scans/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/security-scans/<int:pk>/cancel", "POST"): (["ml_engineer", "security_reviewer"], True),
    ("api/v1/security-scans/<int:pk>/submit", "POST"): (["data_steward", "ml_engineer", "platform_admin"], True),
    ("api/v1/bias-evaluations/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/bias-evaluations/<int:pk>/chart", "GET"): (MEMBERS, True),
    ("api/v1/bias-evaluations/<int:pk>/cancel", "POST"): (["ml_engineer", "fairness_reviewer"], True),
    ("api/v1/bias-evaluations/<int:pk>/submit", "POST"): (["data_steward", "ml_engineer", "platform_admin"], True),
    ("api/v1/projects/<slug:slug>/deployments/", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/deployments/", "POST"): (["ml_engineer"], True),
    ("api/v1/deployments/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/deployments/<int:pk>/promote", "POST"): (["ml_engineer"], True),
    ("api/v1/deployments/<int:pk>/rollback", "POST"): (["platform_admin"], True),
    ("api/v1/deployments/<int:pk>/retire", "POST"): (["platform_admin"], True),
    ("api/v1/deployments/<int:pk>/feedback", "POST"): ([r for r in MEMBERS if r != "auditor"], True),
    # A preference dataset from its feedback: ML engineers and data stewards ask (serving.services.preference).
    ("api/v1/deployments/<int:pk>/export-feedback", "POST"): (["data_steward", "ml_engineer"], True),
    ("api/v1/deployments/<int:pk>/monitoring", "GET"): (MEMBERS, True),
    ("api/v1/deployments/<int:pk>/manifests", "GET"): (MEMBERS, True),
    # Monitoring thresholds: platform admins pause and resume; they and compliance officers review.
    ("api/v1/deployments/<int:pk>/pause", "POST"): (["platform_admin"], True),
    ("api/v1/deployments/<int:pk>/resume", "POST"): (["platform_admin"], True),
    ("api/v1/deployment-alerts/", "GET"): (AUTHENTICATED, False),
    ("api/v1/deployment-alerts/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/deployment-alerts/<int:pk>/acknowledge", "POST"): (["platform_admin", "compliance_officer"], True),
    ("api/v1/deployment-alerts/<int:pk>/resolve", "POST"): (["platform_admin", "compliance_officer"], True),
    ("api/v1/reports/", "GET"): (AUTHENTICATED, False),
    ("api/v1/reports/", "POST"): (["auditor", "compliance_officer"], False),
    ("api/v1/reports/<int:pk>", "GET"): (["auditor", "compliance_officer"], True),
    ("api/v1/reports/<int:pk>/pdf", "GET"): (["auditor", "compliance_officer"], True),
    ("api/v1/deployments/<int:pk>/submit", "POST"): (["data_steward", "ml_engineer", "platform_admin"], True),
    # The model server's client credentials: every member sees them listed; the project's platform
    # admins, who run its servers, issue and revoke them.
    ("api/v1/deployments/<int:pk>/client-credentials", "GET"): (MEMBERS, True),
    ("api/v1/deployments/<int:pk>/client-credentials", "POST"): (["platform_admin"], True),
    ("api/v1/client-credentials/<int:pk>/revoke", "POST"): (["platform_admin"], True),
    # Data-subject requests (audits.privacy): compliance officers act, auditors read.
    ("api/v1/privacy/requests/", "GET"): (AUTHENTICATED, False),
    ("api/v1/privacy/projects/<slug:slug>/requests/", "POST"): (["compliance_officer"], True),
    ("api/v1/privacy/projects/<slug:slug>/request-log", "GET"): (["auditor", "compliance_officer"], True),
    ("api/v1/privacy/projects/<slug:slug>/legal-holds/", "POST"): (["compliance_officer"], True),
    ("api/v1/privacy/requests/<int:pk>", "GET"): (["auditor", "compliance_officer"], True),
    **{
        (f"api/v1/privacy/requests/<int:pk>/{command}", "POST"): (["compliance_officer"], True)
        for command in (
            "confirm-receipt",
            "verify-identity",
            "search",
            "access-package",
            "access-letter",
            "extend",
            "deny",
            "withdraw",
            "erase",
            "complete",
        )
    },
    ("api/v1/privacy/legal-holds/", "GET"): (AUTHENTICATED, False),
    ("api/v1/privacy/legal-holds/<int:pk>/release", "POST"): (["compliance_officer"], True),
    ("api/v1/privacy/model-reviews/", "GET"): (AUTHENTICATED, False),
    ("api/v1/privacy/model-reviews/<int:pk>/close", "POST"): (["compliance_officer"], True),
    # Incidents (EU AI Act Art. 73): every member reads them and all but auditors register and link
    # them; compliance officers and platform admins classify, report and close.
    ("api/v1/incidents/", "GET"): (AUTHENTICATED, False),
    ("api/v1/projects/<slug:slug>/incidents/", "POST"): ([r for r in MEMBERS if r != "auditor"], True),
    ("api/v1/incidents/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/incidents/<int:pk>/link", "POST"): ([r for r in MEMBERS if r != "auditor"], True),
    **{
        (f"api/v1/incidents/<int:pk>/{command}", "POST"): (["compliance_officer", "platform_admin"], True)
        for command in ("classify", "report", "close")
    },
    # A project's PII lists: every member reads them; its data stewards and platform admins change them.
    ("api/v1/projects/<slug:slug>/pii-lists/", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/pii-lists/", "POST"): (["data_steward", "platform_admin"], True),
    ("api/v1/pii-list-entries/<int:pk>/remove", "POST"): (["data_steward", "platform_admin"], True),
    # AI systems (EU AI Act): every member reads them; ML engineers, compliance officers and platform
    # admins register, update and classify them; submitting a classification is a requester's (an
    # ML engineer or platform admin: governance.rules.REQUESTER_ROLES), a compliance officer approves.
    ("api/v1/ai-systems/questionnaire", "GET"): (AUTHENTICATED, False),
    ("api/v1/projects/<slug:slug>/ai-systems/", "GET"): (MEMBERS, True),
    ("api/v1/projects/<slug:slug>/ai-systems/", "POST"): (AI_SYSTEM_REGISTRARS, True),
    ("api/v1/ai-systems/<int:pk>", "GET"): (MEMBERS, True),
    ("api/v1/ai-systems/<int:pk>/update", "POST"): (AI_SYSTEM_REGISTRARS, True),
    ("api/v1/ai-systems/<int:pk>/classifications/", "GET"): (MEMBERS, True),
    ("api/v1/ai-systems/<int:pk>/classifications/", "POST"): (AI_SYSTEM_REGISTRARS, True),
    ("api/v1/ai-system-classifications/<int:pk>/submit", "POST"): (["ml_engineer", "platform_admin"], True),
}

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("api/v1/reports/", "POST"): {
        "kind": "governance_audit",
        "project": "own",
        "period_start": "2026-01-01",
        "period_end": "2026-01-31",
    },
    ("api/v1/approvals/<int:pk>/approve", "POST"): {"reason": "checked"},
    ("api/v1/approvals/<int:pk>/reject", "POST"): {"reason": "checked"},
    ("api/v1/approvals/<int:pk>/withdraw", "POST"): {"reason": "changed my mind"},
    ("api/v1/approvals/<int:pk>/break-glass", "POST"): {"justification": "the incident needs the retrained model now"},
    ("api/v1/break-glass-reviews/<int:pk>/close", "POST"): {"outcome": "upheld", "note": "the incident was real"},
    ("api/v1/projects/<slug:slug>/datasets/", "POST"): {
        "slug": "new",
        "name": "New",
        "purpose": "p",
        "lawful_basis": "contract",
        "retention_days": 30,
        "source": "s",
    },
    ("api/v1/projects/<slug:slug>/data-subjects/lookup", "POST"): {"kind": "email", "identifier": "a@example.org"},
    ("api/v1/datasets/<int:pk>/versions/register-path", "POST"): {"path": "/etc/passwd"},
    ("api/v1/dataset-versions/<int:pk>/review", "POST"): {"decision": "false_positive"},
    ("api/v1/dataset-versions/<int:pk>/submit", "POST"): {"action": "dataset_version.use_for_training"},
    ("api/v1/projects/<slug:slug>/models/", "POST"): {"slug": "m2", "name": "M2"},
    ("api/v1/models/<int:pk>/versions/", "POST"): {"folder": "/etc"},
    ("api/v1/projects/<slug:slug>/prompt-templates/", "POST"): {"slug": "t", "body": "Answer.", "intended_use": "u"},
    ("api/v1/projects/<slug:slug>/fine-tune-runs/", "POST"): {
        "name": "r",
        "base_model_version": 999999,
        "dataset_versions": [999999],
        "hyperparameters": {"learning_rate": 0.001, "batch_size": 1, "max_steps": 1},
    },
    ("api/v1/projects/<slug:slug>/gpu-quota", "PUT"): {"gpu_hours": 5, "reason": "the pilot"},
    ("api/v1/fine-tune-runs/<int:pk>/cancel", "POST"): {"reason": "not needed"},
    ("api/v1/fine-tune-runs/<int:pk>/submit", "POST"): {"action": "fine_tune_run.execute"},
    ("api/v1/projects/<slug:slug>/optimisation-runs/", "POST"): {"source": 999999, "evaluation_set": 999999},
    ("api/v1/optimisation-runs/<int:pk>/submit", "POST"): {"action": "optimisation_run.execute"},
    ("api/v1/optimisation-runs/<int:pk>/cancel", "POST"): {"reason": "not needed"},
    ("api/v1/deployments/<int:pk>/export-feedback", "POST"): {"dataset": 999999},
    ("api/v1/model-versions/<int:pk>/security-scans/", "POST"): {"profile": "smoke"},
    ("api/v1/model-versions/<int:pk>/bias-evaluations/", "POST"): {
        "profile": "default",
        "dataset_version": 999999,
        "prompt_template": 999999,
        "label_field": "y",
        "sensitive_feature": "g",
        "label_mapping": {"yes": "1"},
    },
    ("api/v1/model-versions/<int:pk>/submit", "POST"): {"action": "model_version.deploy"},
    ("api/v1/security-scans/<int:pk>/submit", "POST"): {"action": "security_scan.waive"},
    ("api/v1/security-scans/<int:pk>/cancel", "POST"): {"reason": "not needed"},
    ("api/v1/bias-evaluations/<int:pk>/cancel", "POST"): {"reason": "not needed"},
    ("api/v1/bias-evaluations/<int:pk>/submit", "POST"): {"action": "bias_evaluation.waive"},
    ("api/v1/projects/<slug:slug>/deployments/", "POST"): {
        "model_version": 999999,
        "name": "assistant",
        "environment": "staging",
    },
    ("api/v1/deployments/<int:pk>/rollback", "POST"): {"reason": "worse answers"},
    ("api/v1/deployments/<int:pk>/retire", "POST"): {"reason": "end of the pilot"},
    ("api/v1/deployments/<int:pk>/pause", "POST"): {"reason": "answers look wrong"},
    ("api/v1/deployments/<int:pk>/resume", "POST"): {"reason": "reviewed"},
    ("api/v1/deployment-alerts/<int:pk>/acknowledge", "POST"): {"reason": "looking into it"},
    ("api/v1/deployment-alerts/<int:pk>/resolve", "POST"): {"reason": "expected traffic"},
    ("api/v1/deployments/<int:pk>/feedback", "POST"): {
        "request_id": "9b2f5f0e-8a4c-4d7e-9a51-0c3f2b1d6e7a",
        "rating": 4,
        "category": "helpful",
    },
    ("api/v1/deployments/<int:pk>/submit", "POST"): {"action": "deployment.deploy"},
    ("api/v1/deployments/<int:pk>/client-credentials", "POST"): {"name": "checkout-service", "expires_in_days": 30},
    ("api/v1/privacy/projects/<slug:slug>/requests/", "POST"): {
        "regime": "gdpr",
        "kind": "access",
        "channel": "email",
        "received_at": "2025-01-06T10:00:00+00:00",
        "identifiers": [{"kind": "email", "value": "x@example.org"}],
    },
    ("api/v1/privacy/projects/<slug:slug>/legal-holds/", "POST"): {"reason": "litigation"},
    ("api/v1/privacy/requests/<int:pk>/verify-identity", "POST"): {"method": "reply from the address on file"},
    ("api/v1/privacy/requests/<int:pk>/extend", "POST"): {"reason": "many datasets"},
    ("api/v1/privacy/requests/<int:pk>/deny", "POST"): {"basis": "manifestly unfounded"},
    ("api/v1/privacy/requests/<int:pk>/withdraw", "POST"): {"reason": "by phone"},
    ("api/v1/privacy/requests/<int:pk>/complete", "POST"): {"nature": "answered by email"},
    ("api/v1/privacy/legal-holds/<int:pk>/release", "POST"): {"reason": "case closed"},
    ("api/v1/privacy/model-reviews/<int:pk>/close", "POST"): {"outcome": "kept", "note": "negligible share"},
    ("api/v1/projects/<slug:slug>/pii-lists/", "POST"): {
        "kind": "allow",
        "match": "pattern",
        "text": "[0-9a-f]{16}",
        "entity": "PERSON",
        "reason": "commit hashes",
    },
    ("api/v1/pii-list-entries/<int:pk>/remove", "POST"): {"reason": "no longer needed"},
    ("api/v1/projects/<slug:slug>/incidents/", "POST"): {
        "title": "t",
        "description": "d",
        "aware_at": "2026-01-05T10:00:00+00:00",
    },
    ("api/v1/incidents/<int:pk>/classify", "POST"): {"serious": False},
    ("api/v1/incidents/<int:pk>/report", "POST"): {"reported_at": "2026-01-06T10:00:00+00:00", "reference": "R-1"},
    ("api/v1/incidents/<int:pk>/close", "POST"): {"root_cause": "a filter", "corrective_action": "fixed"},
    ("api/v1/projects/<slug:slug>/ai-systems/", "POST"): {"slug": "s", "name": "S", "purpose": "ranks applications"},
    ("api/v1/ai-systems/<int:pk>/update", "POST"): {"deployers": ["HR"]},
    # Unanswered: a 400 naming every question, past authorisation (tests/test_ai_systems.py classifies).
    ("api/v1/ai-systems/<int:pk>/classifications/", "POST"): {"answers": {}},
}
MULTIPART = {("api/v1/datasets/<int:pk>/versions/", "POST")}
# Where a member whose role may not act does not see the object either: 404 rather than 403.
HIDDEN_FROM_OTHER_ROLES = {("api/v1/tokens/<slug:prefix>/revoke", "POST")}
# Where a role that may not act is refused before any object is looked up (403 for any object):
# only the roles allowed get 404 for another project's object.
REFUSED_BEFORE_LOOKUP = {
    ("api/v1/ledger/entries/<int:index>", "GET"),
    ("api/v1/ledger/entries/<int:index>/receipt", "GET"),
}
SKIP_METHODS = {"OPTIONS", "HEAD"}


def api_endpoints() -> list[tuple[str, str]]:
    """Every (route, method) under api/ that the URL conf serves."""
    found: list[tuple[str, str]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/"):
                view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
                methods = [m.upper() for m in getattr(view, "http_method_names", []) if hasattr(view, m)]
                found.extend((route, m) for m in methods if m not in SKIP_METHODS)

    walk(get_resolver().url_patterns, "")
    return sorted(set(found))


def openapi_path(route: str) -> str:
    """The schema's name of a URL conf route: ``api/v1/datasets/<int:pk>`` -> ``/api/v1/datasets/{id}``."""
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{id}" if m[1] == "pk" else "{" + m[1] + "}", route)


def test_every_endpoint_has_a_row() -> None:
    endpoints = set(api_endpoints())
    assert endpoints - set(MATRIX) == set(), "endpoints without a row in MATRIX"
    assert set(MATRIX) - endpoints == set(), "rows for endpoints that no longer exist"


def _scenario(project_slug: str, people: dict[str, Any], owner_roles: dict[str, Any]) -> dict[str, Any]:
    """One of each object in a project: dataset, scanned version, model, approval request."""
    system = people["system"]
    project = project_create(actor=system, slug=project_slug, name=project_slug)
    for role, user in owner_roles.items():
        project_role_grant(actor=system, project=project, user=user, role=Role(role), reason="test setup")
    dataset = make_dataset({**people, "project": project, "data_steward": owner_roles["data_steward"]}, slug="d")
    version, _ = dataset_version_upload(
        actor=owner_roles["ml_engineer"], dataset=dataset, filename="t.jsonl", data=b'{"t": "a"}\n{"t": "a"}\n'
    )
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=system)
    model = model_create(actor=owner_roles["ml_engineer"], project=project, slug="m", name="M")
    weights = Path(tempfile.mkdtemp(prefix="weights-"))
    (weights / "model.safetensors").write_bytes(project_slug.encode())
    with override_settings(REGISTRY_ALLOWED_ROOTS=[weights.resolve()]):
        model_version_register_folder(actor=owner_roles["ml_engineer"], model=model, folder=str(weights))
    prompt_template_register(actor=owner_roles["ml_engineer"], project=project, slug="p", body="x", intended_use="u")
    approval = approval_request_submit(
        actor=owner_roles["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    from governance.services import approval_break_glass
    from registry.models import ModelVersion

    second, _ = dataset_version_upload(
        actor=owner_roles["ml_engineer"], dataset=dataset, filename="u.jsonl", data=b'{"t": "c"}\n'
    )
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        pii_scan_run(scan_id=PiiScan.objects.get(version=second).pk, actor=system)
    emergency = approval_request_submit(
        actor=owner_roles["ml_engineer"], subject_type="dataset_version", subject_id=str(second.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    approval_break_glass(
        actor=owner_roles["platform_admin"], request_id=emergency.pk, justification="an emergency, for the matrix"
    )
    model_version = ModelVersion.objects.filter(model=model).first()
    from training.services import fine_tune_run_request

    version.refresh_from_db()
    from audits.checks.services import bias_evaluation_request, security_scan_request

    scan = security_scan_request(actor=owner_roles["ml_engineer"], model_version=model_version, profile_name="smoke")
    evaluation_data, _ = dataset_version_upload(
        actor=owner_roles["ml_engineer"], dataset=dataset, filename="e.jsonl",
        data=b'{"t": "a", "g": "x", "y": "1"}\n{"t": "b", "g": "z", "y": "0"}\n',
    )  # fmt: skip
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        pii_scan_run(scan_id=PiiScan.objects.get(version=evaluation_data).pk, actor=system)
    evaluation_data.refresh_from_db()
    from governance.services import approval_request_decide

    for_evaluation = approval_request_submit(
        actor=owner_roles["ml_engineer"], subject_type="dataset_version", subject_id=str(evaluation_data.pk),
        action="dataset_version.use_for_evaluation",
    )  # fmt: skip
    approval_request_decide(
        actor=owner_roles["data_steward"], request_id=for_evaluation.pk, decision="approve", reason="setup"
    )
    from registry.models import PromptTemplate

    evaluation = bias_evaluation_request(
        actor=owner_roles["ml_engineer"], model_version=model_version, dataset_version=evaluation_data,
        prompt_template=PromptTemplate.objects.get(project=project, slug="p"), label_field="y",
        sensitive_feature="g", label_mapping={"yes": "1"}, profile_name="default",
    )  # fmt: skip
    from training.services import optimisation_run_request

    optimisation = optimisation_run_request(
        actor=owner_roles["ml_engineer"], project=project, source=model_version, evaluation_set=evaluation_data,
        text_field="t",
    )  # fmt: skip
    from serving.services import deployment_request

    deployment = deployment_request(
        actor=owner_roles["ml_engineer"], model_version=model_version, name="assistant", environment="staging",
        target={}, guard={"mode": "off"},
    )  # fmt: skip
    from serving.services import deployment_client_credential_issue

    credential, _ = deployment_client_credential_issue(
        actor=owner_roles["platform_admin"], deployment=deployment, name="checkout-service", expires_in_days=30
    )
    run = fine_tune_run_request(
        actor=owner_roles["ml_engineer"], project=project, name="r", base=model_version, dataset_versions=[version],
        text_field="t", hyperparameters={"learning_rate": 1e-3, "batch_size": 1, "max_steps": 1},
    )  # fmt: skip
    from audits.ledger.models import Entry

    entry = Entry.objects.get(action="approval.requested", subject_id=str(version.pk), subject_type="dataset_version")
    from governance.services import pii_list_entry_add

    pii_list_entry, _ = pii_list_entry_add(
        actor=owner_roles["data_steward"],
        project=project,
        kind="allow",
        match="pattern",
        text="[0-9a-f]{12}",
        reason="request ids",
    )
    return {
        **_ai_system(project, owner_roles),
        "incident": _incident(project, owner_roles), "deployment_alert": _deployment_alert(deployment),
        "pii_list_entry": pii_list_entry.pk,
        "entry": entry.index, "client_credential": credential.pk,
        "slug": project.slug, "dataset": dataset.pk, "version": version.pk, "model": model.pk,
        "model_version": model_version.pk if model_version else 0, "approval": approval.pk,
        "optimisation_run": optimisation.pk,
        "review": emergency.break_glass.pk, "fine_tune_run": run.pk, "scan": scan.pk, "deployment": deployment.pk,
        "evaluation": evaluation.pk, "report": _report(project, owner_roles), "token": _ci_token(project, people), **_privacy_scenario(project, people, owner_roles),
    }  # fmt: skip


def _deployment_alert(deployment: Any) -> int:
    """A review opened by the shipped staging monitoring rule: the deployment live, its prompts
    drifting from a baseline hour (log lines as the server writes them)."""
    import json
    import uuid

    from serving.models import Deployment
    from serving.selectors import inference_log_path
    from serving.services import deployment_monitor_check

    Deployment.objects.filter(pk=deployment.pk).update(state="live")
    path = inference_log_path(deployment)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as log:
        for hour, chars in (("00", 10), ("01", 300)):
            for i in range(20):
                log.write(json.dumps({"time": f"2025-01-01T{hour}:00:{i:02d}Z", "request_id": str(uuid.uuid4()),
                                      "status": 200, "latency_ms": 3.0, "prompt_chars": chars, "guard": {}}) + "\n")  # fmt: skip
    [alert] = deployment_monitor_check(deployment_id=deployment.pk)
    return alert.pk


def _ai_system(project: Any, owner_roles: dict[str, Any]) -> dict[str, int]:
    """An AI system of the project, registered by its ML engineer, and a draft classification of it."""
    from systems.rules import QUESTIONS
    from systems.services import ai_system_classification_create, ai_system_register

    engineer = owner_roles["ml_engineer"]
    system = ai_system_register(
        actor=engineer, project=project, slug="hiring", name="H", purpose="ranks applications", owner=engineer
    )
    answers: dict[str, Any] = {q.id: False for q in QUESTIONS if q.kind == "yes_no"}
    answers.update(annex_iii_areas=[], art_6_3_exception="none")
    classification = ai_system_classification_create(actor=engineer, system=system, answers=answers)
    return {"ai_system": system.pk, "ai_system_classification": classification.pk}


def _incident(project: Any, owner_roles: dict[str, Any]) -> int:
    """An incident of the project, registered by its ML engineer and not classified yet."""
    import datetime as dt

    from incidents.services import incident_register

    return incident_register(
        actor=owner_roles["ml_engineer"], project=project, title="t", description="d",
        aware_at=dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC),
    ).pk  # fmt: skip


def _ci_token(project: Any, people: dict[str, Any]) -> str:
    """The prefix of a token of a CI service account working in the project."""
    from governance.services import service_account_create

    account = service_account_create(actor=people["system"], username=f"{project.slug}-ci")
    project_role_grant(actor=people["system"], project=project, user=account.user, role=Role.ML_ENGINEER, reason="ci")
    return api_token_create(actor=people["system"], user=account.user, name="ci")[0].prefix


def _report(project: Any, owner_roles: dict[str, Any]) -> int:
    """A report run, queued (no worker here: its PDF answers 409, which the matrix counts as OK)."""
    import datetime as dt

    from audits.reports.services import report_request

    return report_request(
        actor=owner_roles["compliance_officer"], kind="governance_audit", project=project,
        period_start=dt.date(2026, 1, 1), period_end=dt.date(2026, 1, 31),
    ).pk  # fmt: skip


def _privacy_scenario(project: Any, people: dict[str, Any], owner_roles: dict[str, Any]) -> dict[str, int]:
    """A person's data in a dataset version and a model trained on it, erased (which opens a model
    review), and a project-wide legal hold placed afterwards."""
    from django.utils import timezone

    from audits.privacy.services import dsr_erase, dsr_receive, dsr_search, dsr_verify_identity, legal_hold_place

    officer, engineer = owner_roles["compliance_officer"], owner_roles["ml_engineer"]
    dataset = make_dataset({**people, "project": project, "data_steward": owner_roles["data_steward"]}, slug="pd")
    version, _ = dataset_version_upload(
        actor=engineer, dataset=dataset, filename="pd.jsonl", data=b'{"t": "ana@example.org"}\n{"t": "b"}\n'
    )
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    from registry.services import dataset_version_review

    version.refresh_from_db()
    version = dataset_version_review(
        actor=owner_roles["data_steward"], version=version, decision="confirmed", note="matrix"
    )
    model = model_create(actor=engineer, project=project, slug="pd-model", name="PD")
    weights = Path(tempfile.mkdtemp(prefix="weights-"))
    (weights / "model.safetensors").write_bytes(b"pd-" + project.slug.encode())
    with override_settings(REGISTRY_ALLOWED_ROOTS=[weights.resolve()]):
        model_version_register_folder(actor=engineer, model=model, folder=str(weights), dataset_versions=[version])
    request = dsr_receive(
        actor=officer, project=project, regime="gdpr", kind="erasure", channel="email", received_at=timezone.now(),
        identifiers=[{"kind": "email", "value": "ana@example.org"}],
    )  # fmt: skip
    request = dsr_verify_identity(actor=officer, request=request, method="reply from the address on file")
    request = dsr_erase(actor=officer, request=dsr_search(actor=officer, request=request))
    hold = legal_hold_place(actor=officer, project=project, reason="regulator inquiry")
    return {"dsr": request.pk, "hold": hold.pk, "model_review": request.model_reviews.get().pk}


def _path(route: str, objects: dict[str, Any]) -> str:
    kind = (
        "ai_system" if "ai-systems/<int" in route else
        "ai_system_classification" if "ai-system-classifications/<int" in route else
        "incident" if "incidents/<int" in route else
        "pii_list_entry" if "pii-list-entries/<int" in route else
        "client_credential" if "client-credentials/<int" in route else
        "deployment_alert" if "deployment-alerts/<int" in route else
        "report" if "reports/<int" in route else
        "dsr" if "privacy/requests/<int" in route else
        "hold" if "legal-holds/<int" in route else
        "model_review" if "model-reviews/<int" in route else
        "fine_tune_run" if "fine-tune-runs/<int" in route else
        "optimisation_run" if "optimisation-runs/<int" in route else
        "deployment" if "deployments/<int" in route else
        "scan" if "security-scans/<int" in route else
        "evaluation" if "bias-evaluations/<int" in route else
        "review" if "break-glass-reviews/" in route else
        "approval" if "approvals/" in route else
        "version" if "dataset-versions/" in route else
        "dataset" if "datasets/<int" in route else
        "model_version" if "model-versions/" in route else
        "model"
    )  # fmt: skip
    path = "/" + route.replace("<slug:slug>", objects["slug"]).replace("<int:index>", str(objects["entry"]))
    path = path.replace("<slug:prefix>", objects["token"])
    return path.replace("<int:pk>", str(objects[kind]))


def _call(client: Client, method: str, key: tuple[str, str], path: str, auth: dict[str, str]) -> int:
    if method == "GET":
        query = {"index": 0, "first": 1} if "proofs" in path else {}
        return client.get(path, query, **auth).status_code
    if method == "PUT":
        return client.put(path, BODIES.get(key, {}), content_type="application/json", **auth).status_code
    if key in MULTIPART:
        return client.post(path, {"file": SimpleUploadedFile("u.jsonl", b'{"t": "b"}\n')}, **auth).status_code
    return client.post(path, BODIES.get(key, {}), content_type="application/json", **auth).status_code


@pytest.mark.django_db
def test_permission_matrix(client: Client, people: dict[str, Any]) -> None:
    User = get_user_model()
    members = {role: User.objects.create_user(username=f"m-{role}") for role in MEMBERS}
    strangers = {role: User.objects.create_user(username=f"s-{role}") for role in MEMBERS}
    from audits.ledger.selectors import tree_size

    own = _scenario("own", people, members)
    between = tree_size()
    other = _scenario("other", people, strangers)
    others_entries = set(range(between, tree_size()))
    checkpoint_create()
    tokens = {
        role: {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}
        for role, user in members.items()
    }
    tokens["anonymous"] = {}
    failures = []
    for key in api_endpoints():
        route, method = key
        allowed, hides_other = MATRIX[key]
        for role in ROLES:
            code = _call(client, method, key, _path(route, own), tokens[role])
            if allowed == PUBLIC or (role != "anonymous" and (allowed == AUTHENTICATED or role in allowed)):
                expected = "OK"
            else:
                expected = "401" if role == "anonymous" else "404" if key in HIDDEN_FROM_OTHER_ROLES else "403"
            got = str(code) if code in (401, 403, 404) else "OK"
            if got != expected:
                failures.append(f"{method} {route} as {role} (own): expected {expected}, got {code}")
            if hides_other and role != "anonymous":
                code = _call(client, method, key, _path(route, other), tokens[role])
                expected_code = 403 if key in REFUSED_BEFORE_LOOKUP and role not in allowed else 404
                if code != expected_code:
                    failures.append(f"{method} {route} as {role} (other project): expected {expected_code}, got {code}")
    failures += _ledger_reads(client, tokens, own, others_entries, people)
    assert failures == [], f"{len(failures)} cells differ:\n" + "\n".join(failures)


def _ledger_reads(
    client: Client, tokens: dict[str, dict[str, str]], own: dict[str, Any], others: set[int], people: dict[str, Any]
) -> list[str]:
    """The ledger's per-project reads: a project's readers list their project's entries and none
    of the entries the other project's scenario appended; an organisation-wide auditor reads all."""
    from audits.ledger.selectors import tree_size
    from governance.services.auditors import organisation_auditor_grant

    failures = []
    for role in ("auditor", "compliance_officer"):
        listed = {
            e["index"] for e in client.get("/api/v1/ledger/entries/", {"limit": 1000}, **tokens[role]).json()["results"]
        }
        if own["entry"] not in listed or listed & others:
            failures.append(
                f"GET api/v1/ledger/entries/ as {role}: lists {len(listed & others)} of the other project's entries"
            )
    everyone = get_user_model().objects.create_user(username="organisation-auditor")
    organisation_auditor_grant(actor=people["system"], user=everyone, reason="the matrix")
    auth = {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=people['system'], user=everyone, name='t')[1]}"}
    page = client.get("/api/v1/ledger/entries/", {"limit": 1000}, **auth).json()
    if page.get("count") != tree_size() or not others <= {e["index"] for e in page.get("results", [])}:
        failures.append(f"GET api/v1/ledger/entries/ as an organisation-wide auditor: {page} for {tree_size()}")
    for index in (own["entry"], min(others), max(others)):
        if client.get(f"/api/v1/ledger/entries/{index}", **auth).status_code != 200:
            failures.append(f"GET api/v1/ledger/entries/{index} as an organisation-wide auditor: refused")
    return failures
