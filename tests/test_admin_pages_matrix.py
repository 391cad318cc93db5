"""Every admin page, every role (anonymous included), opened on an object of the caller's project
and on one of another project. The pages come from the admin site's URL conf: a page without a row
in PAGES fails the suite, and so does a row for a page that no longer exists.

What is checked is what a person meets when they open the page (GET): "open" (200) or "closed"
(a redirect to the sign-in page or to the admin's index, 403, 404, or 405 for a page that only
takes a form's POST). The POST side of each page is tested with the page itself: the forms call the
same services as the API, whose permissions tests/test_permission_matrix.py covers. A 500 fails
the test (the test client raises the exception).

Each person holds one role in one project and has passed the second factor, as after a real
sign-in (common.testing.admin_login). A role that opens a page on its own project's object must not
open it on another project's: that object is closed to them.

To print the rows as they are now (when adding pages), run with ADMIN_PAGES_PRINT=1 and -s, then
read every changed row before pasting it: each row is a decision about who may see what.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver

from audits.ledger.models import Checkpoint
from audits.ledger.services import checkpoint_create
from common.testing import admin_login
from tests.test_permission_matrix import MEMBERS, _scenario

ANONYMOUS = "anonymous"
WHO = [ANONYMOUS, *MEMBERS]
ALL = tuple(MEMBERS)
NOBODY: tuple[str, ...] = ()

# Page (its URL name without the "admin:" namespace) -> the roles that open it on their own
# project's object (or at all, for a page without an object).
PAGES: dict[str, tuple[str, ...]] = {
    "app_list": ALL,
    "auth_group_add": NOBODY,
    "auth_group_change": NOBODY,
    "auth_group_changelist": NOBODY,
    "auth_group_delete": NOBODY,
    "auth_group_history": NOBODY,
    "auth_user_add": NOBODY,
    "auth_user_change": NOBODY,
    "auth_user_changelist": NOBODY,
    "auth_user_delete": NOBODY,
    "auth_user_history": NOBODY,
    "auth_user_password_change": NOBODY,
    "autocomplete": NOBODY,
    "axes_accessattempt_add": NOBODY,
    "axes_accessattempt_change": NOBODY,
    "axes_accessattempt_changelist": NOBODY,
    "axes_accessattempt_delete": NOBODY,
    "axes_accessattempt_history": NOBODY,
    "axes_accessfailurelog_add": NOBODY,
    "axes_accessfailurelog_change": NOBODY,
    "axes_accessfailurelog_changelist": NOBODY,
    "axes_accessfailurelog_delete": NOBODY,
    "axes_accessfailurelog_history": NOBODY,
    "axes_accesslog_add": NOBODY,
    "axes_accesslog_change": NOBODY,
    "axes_accesslog_changelist": NOBODY,
    "axes_accesslog_delete": NOBODY,
    "axes_accesslog_history": NOBODY,
    "checks_biasevaluation_add": NOBODY,
    "checks_biasevaluation_change": ALL,
    "checks_biasevaluation_changelist": ALL,
    "checks_biasevaluation_delete": NOBODY,
    "checks_biasevaluation_history": ALL,
    "checks_biasevaluation_waive": ("data_steward", "ml_engineer", "platform_admin"),
    "checks_securityscan_add": NOBODY,
    "checks_securityscan_change": ALL,
    "checks_securityscan_changelist": ALL,
    "checks_securityscan_delete": NOBODY,
    "checks_securityscan_history": ALL,
    "checks_securityscan_waive": ("data_steward", "ml_engineer", "platform_admin"),
    "governance_organisationprofile_add": NOBODY,
    # Opened on row 1, which no scenario makes: its list is open to compliance officers and auditors.
    "governance_organisationprofile_change": NOBODY,
    "governance_organisationprofile_changelist": ("compliance_officer", "auditor"),
    "governance_organisationprofile_delete": NOBODY,
    "governance_organisationprofile_history": NOBODY,
    "governance_piilistentry_add": ("data_steward", "platform_admin"),
    "governance_piilistentry_change": ALL,
    "governance_piilistentry_changelist": ALL,
    "governance_piilistentry_delete": NOBODY,
    "governance_piilistentry_history": ALL,
    "governance_piilistentry_remove": ("data_steward", "platform_admin"),
    "governance_apitoken_add": ALL,
    # The scenario's token is the CI service account's: its project's platform admin manages it.
    "governance_apitoken_change": ("platform_admin",),
    "governance_apitoken_changelist": ALL,
    "governance_apitoken_delete": NOBODY,
    "governance_apitoken_history": ("platform_admin",),
    "governance_apitoken_revoke": ("platform_admin",),
    "governance_approvalrequest_add": NOBODY,
    "governance_approvalrequest_change": ALL,
    "governance_approvalrequest_changelist": ALL,
    "governance_approvalrequest_delete": NOBODY,
    "governance_approvalrequest_history": ALL,
    "governance_breakglassreview_add": NOBODY,
    "governance_breakglassreview_change": ("compliance_officer", "auditor", "platform_admin"),
    "governance_breakglassreview_changelist": ("compliance_officer", "auditor", "platform_admin"),
    "governance_breakglassreview_delete": NOBODY,
    "governance_breakglassreview_history": ("compliance_officer", "auditor", "platform_admin"),
    "governance_project_add": NOBODY,
    "governance_project_change": NOBODY,
    "governance_project_changelist": NOBODY,
    "governance_project_delete": NOBODY,
    "governance_project_history": NOBODY,
    # Opened on row 1, which no scenario makes: the list is open to those who administer accounts.
    "governance_secondfactorlock_add": NOBODY,
    "governance_secondfactorlock_change": NOBODY,
    "governance_secondfactorlock_changelist": ("platform_admin",),
    "governance_secondfactorlock_delete": NOBODY,
    "governance_secondfactorlock_history": NOBODY,
    "governance_secondfactorlock_unlock": NOBODY,
    "governance_serviceaccount_add": NOBODY,
    "governance_serviceaccount_change": NOBODY,
    "governance_serviceaccount_changelist": NOBODY,
    "governance_serviceaccount_delete": NOBODY,
    "governance_serviceaccount_history": NOBODY,
    "incidents_incident_add": (
        "data_steward",
        "ml_engineer",
        "security_reviewer",
        "fairness_reviewer",
        "compliance_officer",
        "platform_admin",
    ),
    "incidents_incident_change": ALL,
    "incidents_incident_changelist": ALL,
    "incidents_incident_delete": NOBODY,
    "incidents_incident_history": ALL,
    # A step takes only its form's POST (a GET goes back to the incident's page).
    "incidents_incident_step": NOBODY,
    "index": ALL,
    "jsi18n": ALL,
    "ledger_checkpoint_add": NOBODY,
    "ledger_checkpoint_change": ("compliance_officer", "auditor"),
    "ledger_checkpoint_changelist": ("compliance_officer", "auditor"),
    "ledger_checkpoint_delete": NOBODY,
    "ledger_checkpoint_history": ("compliance_officer", "auditor"),
    "ledger_entry_add": NOBODY,
    "ledger_entry_change": ("compliance_officer", "auditor"),
    "ledger_entry_changelist": ("compliance_officer", "auditor"),
    "ledger_entry_delete": NOBODY,
    "ledger_entry_history": ("compliance_officer", "auditor"),
    "ledger_entry_proof": ("compliance_officer", "auditor"),
    "ledger_entry_proof_download": ("compliance_officer", "auditor"),
    "ledger_publishedkey_add": NOBODY,
    "ledger_publishedkey_change": ("compliance_officer", "auditor"),
    "ledger_publishedkey_changelist": ("compliance_officer", "auditor"),
    "ledger_publishedkey_delete": NOBODY,
    "ledger_publishedkey_history": ("compliance_officer", "auditor"),
    "ledger_verificationrun_add": NOBODY,
    "ledger_verificationrun_change": NOBODY,
    "ledger_verificationrun_changelist": ("compliance_officer", "auditor"),
    "ledger_verificationrun_delete": NOBODY,
    "ledger_verificationrun_history": NOBODY,
    "login": ("anonymous",),
    "logout": NOBODY,
    "mfa_enrol": NOBODY,
    "mfa_sign_out": NOBODY,
    "mfa_verify": NOBODY,
    "otp_static_staticdevice_add": NOBODY,
    "otp_static_staticdevice_change": NOBODY,
    "otp_static_staticdevice_changelist": NOBODY,
    "otp_static_staticdevice_delete": NOBODY,
    "otp_static_staticdevice_history": NOBODY,
    "otp_totp_totpdevice_add": NOBODY,
    "otp_totp_totpdevice_change": NOBODY,
    "otp_totp_totpdevice_changelist": NOBODY,
    "otp_totp_totpdevice_config": NOBODY,
    "otp_totp_totpdevice_delete": NOBODY,
    "otp_totp_totpdevice_history": NOBODY,
    "otp_totp_totpdevice_qrcode": NOBODY,
    "password_change": ALL,
    "password_change_done": ALL,
    "privacy_datasubjectrequest_add": ("compliance_officer",),
    "privacy_datasubjectrequest_change": ("compliance_officer", "auditor"),
    "privacy_datasubjectrequest_changelist": ("compliance_officer", "auditor"),
    "privacy_datasubjectrequest_delete": NOBODY,
    # The scenario's request is already erased: its confirmation page is closed to everyone now.
    "privacy_datasubjectrequest_erase": NOBODY,
    "privacy_datasubjectrequest_history": ("compliance_officer", "auditor"),
    "privacy_datasubjectrequest_step": NOBODY,
    "privacy_legalhold_add": NOBODY,
    "privacy_legalhold_change": ("compliance_officer", "auditor"),
    "privacy_legalhold_changelist": ("compliance_officer", "auditor"),
    "privacy_legalhold_delete": NOBODY,
    "privacy_legalhold_history": ("compliance_officer", "auditor"),
    "privacy_modelreview_add": NOBODY,
    "privacy_modelreview_change": ("compliance_officer", "auditor"),
    "privacy_modelreview_changelist": ("compliance_officer", "auditor"),
    "privacy_modelreview_delete": NOBODY,
    "privacy_modelreview_history": ("compliance_officer", "auditor"),
    "registry_dataset_add": ("data_steward",),
    "registry_dataset_change": ALL,
    "registry_dataset_changelist": ALL,
    "registry_dataset_delete": NOBODY,
    "registry_dataset_history": ALL,
    # Pages that take only a form's POST (a GET is 405 or goes back to the object's page).
    "registry_dataset_upload": NOBODY,
    "registry_datasetversion_add": NOBODY,
    "registry_datasetversion_change": ALL,
    "registry_datasetversion_changelist": ALL,
    "registry_datasetversion_delete": NOBODY,
    "registry_datasetversion_history": ALL,
    "registry_datasetversion_mark": NOBODY,
    "registry_datasetversion_preview": NOBODY,
    "registry_datasetversion_review": NOBODY,
    "registry_datasetversion_scan": NOBODY,
    "registry_datasetversion_submit": NOBODY,
    "registry_model_add": NOBODY,
    "registry_model_change": ALL,
    "registry_model_changelist": ALL,
    "registry_model_delete": NOBODY,
    "registry_model_history": ALL,
    "registry_modelversion_add": NOBODY,
    "registry_modelversion_change": ALL,
    "registry_modelversion_changelist": ALL,
    "registry_modelversion_delete": NOBODY,
    "registry_modelversion_history": ALL,
    "registry_piiscan_add": NOBODY,
    "registry_piiscan_change": ALL,
    "registry_piiscan_changelist": ALL,
    "registry_piiscan_delete": NOBODY,
    "registry_piiscan_history": ALL,
    "registry_prompttemplate_add": NOBODY,
    "registry_prompttemplate_change": ALL,
    "registry_prompttemplate_changelist": ALL,
    "registry_prompttemplate_delete": NOBODY,
    "registry_prompttemplate_history": ALL,
    "reports_factsheet": ALL,
    "reports_inventory": ("compliance_officer", "auditor"),
    "reports_reportrun_add": NOBODY,
    "reports_reportrun_change": ("compliance_officer", "auditor"),
    "reports_reportrun_changelist": ("compliance_officer", "auditor", "platform_admin"),
    "reports_reportrun_delete": NOBODY,
    "reports_reportrun_generate": ("compliance_officer", "auditor"),
    "reports_reportrun_history": ("compliance_officer", "auditor"),
    # The scenario's report is queued (no worker here): its PDF is not there to download.
    "reports_reportrun_pdf": NOBODY,
    "serving_deployment_add": ("ml_engineer",),
    "serving_deployment_change": ALL,
    "serving_deployment_changelist": ALL,
    "serving_deployment_client_credentials": ("platform_admin",),
    "serving_deployment_delete": NOBODY,
    # A preference dataset from the deployment's feedback: its ML engineers and data stewards ask.
    "serving_deployment_export_feedback": ("data_steward", "ml_engineer"),
    "serving_deploymentalert_add": NOBODY,
    "serving_deploymentalert_change": ALL,
    "serving_deploymentalert_changelist": ALL,
    "serving_deploymentalert_delete": NOBODY,
    "serving_deploymentalert_history": ALL,
    "serving_deployment_history": ALL,
    "systems_aisystem_add": ("ml_engineer", "compliance_officer", "platform_admin"),
    "systems_aisystem_change": ALL,
    "systems_aisystem_changelist": ALL,
    "systems_aisystem_classify": ("ml_engineer", "compliance_officer", "platform_admin"),
    "systems_aisystem_update": ("ml_engineer", "compliance_officer", "platform_admin"),
    "systems_aisystem_delete": NOBODY,
    "systems_aisystem_history": ALL,
    "systems_aisystemclassification_add": NOBODY,
    "systems_aisystemclassification_change": ALL,
    "systems_aisystemclassification_changelist": ALL,
    "systems_aisystemclassification_delete": NOBODY,
    "systems_aisystemclassification_history": ALL,
    "training_finetunerun_add": ("ml_engineer",),
    "training_finetunerun_change": ALL,
    "training_finetunerun_changelist": ALL,
    "training_finetunerun_delete": NOBODY,
    "training_finetunerun_history": ALL,
    "training_gpuquota_add": NOBODY,
    "training_gpuquota_change": NOBODY,
    "training_gpuquota_changelist": (
        "ml_engineer",
        "security_reviewer",
        "fairness_reviewer",
        "compliance_officer",
        "auditor",
        "platform_admin",
    ),
    "training_gpuquota_delete": NOBODY,
    "training_gpuquota_history": NOBODY,
    "training_optimisationrun_add": ("ml_engineer",),
    "training_optimisationrun_change": ALL,
    "training_optimisationrun_changelist": ALL,
    "training_optimisationrun_delete": NOBODY,
    "training_optimisationrun_history": ALL,
    "view_on_site": NOBODY,
}

# Rows that belong to no project: the ledger's checkpoints, keys and verifications (its entries are
# each a project's or the organisation's), people, devices, lockouts.
NOT_OF_A_PROJECT = (
    "ledger_checkpoint", "ledger_publishedkey", "ledger_verificationrun", "auth_", "otp_", "axes_",
    "governance_organisationprofile",
)  # fmt: skip

# The scenario's object (tests/test_permission_matrix.py) that each model's pages are opened on.
OBJECT_OF_MODEL = {
    "governance_approvalrequest": "approval",
    "governance_breakglassreview": "review",
    "governance_project": "project",
    "governance_apitoken": "token_pk",
    "governance_piilistentry": "pii_list_entry",
    "governance_serviceaccount": "service_account",
    "registry_dataset": "dataset",
    "registry_datasetversion": "version",
    "registry_piiscan": "pii_scan",
    "registry_model": "model",
    "registry_modelversion": "model_version",
    "registry_prompttemplate": "prompt_template",
    "training_finetunerun": "fine_tune_run",
    "training_gpuquota": "gpu_quota",
    "training_optimisationrun": "optimisation_run",
    "serving_deployment": "deployment",
    "serving_deploymentalert": "deployment_alert",
    "checks_securityscan": "scan",
    "checks_biasevaluation": "evaluation",
    "privacy_datasubjectrequest": "dsr",
    "incidents_incident": "incident",
    "systems_aisystem": "ai_system",
    "systems_aisystemclassification": "ai_system_classification",
    "privacy_legalhold": "hold",
    "privacy_modelreview": "model_review",
    "reports_reportrun": "report",
    "reports_factsheet": "model_version",
    "ledger_entry": "entry",
    "ledger_checkpoint": "checkpoint",
}


def admin_pages() -> dict[str, str]:
    """Every named page of the admin site: URL name -> route (below /admin/)."""
    found: dict[str, str] = {}

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and pattern.name:
                found[pattern.name] = route

    walk(admin.site.get_urls(), "")
    return found


def _objects(scenario: dict[str, Any]) -> dict[str, Any]:
    """The scenario's objects, plus the pks of those it names by another key."""
    from governance.models import ApiToken, Project, ServiceAccount
    from registry.models import PiiScan, PromptTemplate
    from training.models import GpuQuota

    project = Project.objects.get(slug=scenario["slug"])
    account = ServiceAccount.objects.get(user__username=f"{project.slug}-ci")
    quota = GpuQuota.objects.filter(project=project).first()
    return {
        **scenario,
        "project": project.pk,
        "token_pk": ApiToken.objects.get(prefix=scenario["token"]).pk,
        "service_account": account.pk,
        "pii_scan": PiiScan.objects.filter(version_id=scenario["version"]).latest("pk").pk,
        "prompt_template": PromptTemplate.objects.get(project=project, slug="p").pk,
        "gpu_quota": quota.pk if quota else 0,
        "entry": scenario["entry"],  # an entry of the project (its entry pages are scoped by project)
        "entry_index": scenario["entry"],
        "checkpoint": Checkpoint.objects.latest("pk").pk,
    }


def _path(name: str, route: str, objects: dict[str, Any]) -> str:
    model = next((m for m in OBJECT_OF_MODEL if name == m or name.startswith(m + "_")), None)
    # A model without a scenario object (users, groups, devices, lockouts) is opened on its row 1:
    # no role opens those pages, whatever the row.
    pk = str(objects[OBJECT_OF_MODEL[model]]) if model else "1"
    path = "/admin/" + ("governance/" if name == "app_list" else route)
    for parameter in ("<path:object_id>", "<int:pk>", "<id>"):
        path = path.replace(parameter, pk)
    # The parts of a few pages below an object: a ledger entry's index, a finding (the version's
    # scan, its first finding) and a step.
    path = path.replace("<int:index>", str(objects["entry_index"]))
    path = path.replace("<int:scan>", str(objects["pii_scan"])).replace("<int:number>", "0")
    return path.replace("<slug:step>", "confirm-receipt")


def _outcome(client: Client, path: str) -> str:
    code = client.get(path).status_code
    if code == 200:
        return "open"
    assert code in (302, 403, 404, 405), f"GET {path}: {code}"
    return "closed"


def test_every_admin_page_has_a_row() -> None:
    pages = set(admin_pages())
    if os.environ.get("ADMIN_PAGES_PRINT"):
        return
    assert pages - set(PAGES) == set(), "admin pages without a row in PAGES"
    assert set(PAGES) - pages == set(), "rows for admin pages that no longer exist"


@pytest.mark.django_db
def test_admin_pages_matrix(people: dict[str, Any]) -> None:
    User = get_user_model()
    members = {role: User.objects.create_user(username=f"m-{role}") for role in MEMBERS}
    strangers = {role: User.objects.create_user(username=f"s-{role}") for role in MEMBERS}
    own, other = _scenario("own", people, members), _scenario("other", people, strangers)
    checkpoint_create()
    own, other = _objects(own), _objects(other)
    clients = {ANONYMOUS: Client()}
    for role, user in members.items():
        clients[role] = Client()
        admin_login(clients[role], user)
    observed: dict[str, tuple[str, ...]] = {}
    failures: list[str] = []
    for name, route in sorted(admin_pages().items()):
        opened = tuple(who for who in WHO if _outcome(clients[who], _path(name, route, own)) == "open")
        observed[name] = opened
        expected = PAGES.get(name)
        if expected is not None and opened != tuple(r for r in WHO if r in expected):
            failures.append(f"{name} ({route}): expected open to {expected}, open to {opened}")
        of_a_project = "<path:object_id>" in route or "<int:pk>" in route or "<int:index>" in route
        of_a_project = of_a_project and not name.startswith(NOT_OF_A_PROJECT)
        for role in opened if of_a_project else ():
            if role != ANONYMOUS and _outcome(clients[role], _path(name, route, other)) == "open":
                failures.append(f"{name} ({route}): {role} opens another project's object")
    if os.environ.get("ADMIN_PAGES_PRINT"):
        for name, opened in observed.items():
            print(f'    "{name}": {"ALL" if opened == ALL else opened},')
        return
    assert failures == [], f"{len(failures)} pages differ:\n" + "\n".join(failures)
