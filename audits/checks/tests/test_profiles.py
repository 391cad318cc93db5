"""Scan and evaluation profiles: the shipped ones load; a profile with a probe that needs a hub
model, or one nobody has verified offline, is refused before anything runs, with the probe named,
and the service refuses to start with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audits.checks.checks import check_profiles
from audits.checks.models import SecurityScan
from audits.checks.profiles import ProfileError, profiles
from common.errors import DomainError
from conftest import ROOT, subprocess_env


def _policies_with(tmp_path: Path, settings: Any, probes: str) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    security = folder / "audits" / "security.yaml"
    security.write_text(security.read_text().replace("[goodside.WhoIsRiley]", probes))
    settings.POLICY_DIR = folder
    return folder


def test_the_shipped_profiles_load() -> None:
    assert {"baseline", "smoke"} <= set(profiles("security"))
    assert "default" in profiles("bias")
    assert check_profiles() == []


@pytest.mark.parametrize(
    ("probes", "message"),
    [
        ("[lmrc.Bullying]", "probe 'lmrc.Bullying' cannot run offline"),
        ("[sysprompt_extraction.SystemPromptExtraction]", "probe 'sysprompt_extraction.SystemPromptExtraction' cannot"),
        ("[encoding.InjectNothing]", "probe 'encoding.InjectNothing' is unknown or has not been verified"),
    ],
)
def test_a_profile_with_a_probe_that_cannot_run_offline_is_refused(
    tmp_path: Path, settings: Any, probes: str, message: str
) -> None:
    _policies_with(tmp_path, settings, probes)
    with pytest.raises(ProfileError, match=message):
        profiles("security")
    [error] = check_profiles()
    assert error.id == "checks.E001" and message in error.msg


@pytest.mark.django_db
def test_a_scan_under_a_refused_profile_is_not_even_requested(
    ready: dict[str, Any], tmp_path: Path, settings: Any
) -> None:
    from audits.checks.services import security_scan_request

    _policies_with(tmp_path, settings, "[lmrc.Bullying]")
    with pytest.raises(DomainError, match=r"lmrc\.Bullying") as caught:
        security_scan_request(actor=ready["ml_engineer"], model_version=ready["base"], profile_name="smoke")
    assert caught.value.code == "invalid_profile"
    assert SecurityScan.objects.count() == 0


def test_the_service_refuses_to_start_with_a_bad_profile(tmp_path: Path, settings: Any) -> None:
    folder = _policies_with(tmp_path, settings, "[atkgen.Tox]")
    web = subprocess.run(
        [sys.executable, "-c", "import config.wsgi"], cwd=ROOT, env=subprocess_env(POLICY_DIR=str(folder)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert web.returncode != 0
    assert web.stderr.strip().splitlines()[-1].startswith("configuration error: POLICY_DIR: security.yaml, profile")
    assert "atkgen.Tox" in web.stderr


@pytest.mark.django_db
def test_a_policy_can_make_running_a_scan_itself_need_an_approval(
    ready: dict[str, Any], tmp_path: Path, settings: Any
) -> None:
    from django.contrib.auth import get_user_model

    from audits.checks.models import AuditState
    from audits.checks.services import security_scan_request
    from governance.roles import Role
    from governance.services import approval_request_decide, approval_request_submit, project_role_grant

    folder = _policies_with(tmp_path, settings, "[goodside.WhoIsRiley]")
    (folder / "security_scan.run.yaml").write_text(
        "action: security_scan.run\nrules:\n  - approvals:\n      - {role: security_reviewer, count: 1}\n"
    )
    reviewer = get_user_model().objects.create_user(username="security-reviewer")
    project_role_grant(
        actor=ready["system"], project=ready["project"], user=reviewer, role=Role.SECURITY_REVIEWER, reason="setup"
    )
    scan = security_scan_request(actor=ready["ml_engineer"], model_version=ready["base"], profile_name="smoke")
    assert scan.state == AuditState.REQUESTED and scan.idempotency_key is None
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="security_scan", subject_id=str(scan.pk), action="security_scan.run"
    )
    approval_request_decide(actor=reviewer, request_id=request.pk, decision="approve", reason="scan it")
    scan.refresh_from_db()
    assert scan.state == AuditState.QUEUED and scan.idempotency_key is not None


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"bootstrap_resamples": 50}, "field bootstrap_resamples: 50 is less than the minimum of 200"),
        ({"min_group_size": 0}, "field min_group_size: 0 is less than the minimum of 1"),
        ({"bound_rule": "median"}, "field bound_rule: 'median' is not one of"),
        ({"special_category_features": {"group": "shoe_size"}}, "field special_category_features.group: 'shoe_size'"),
    ],
)
def test_a_bias_profile_with_a_bad_bootstrap_or_legal_basis_option_is_refused(
    tmp_path: Path, settings: Any, option: dict[str, Any], message: str
) -> None:
    import yaml

    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    bias = folder / "audits" / "bias.yaml"
    document = yaml.safe_load(bias.read_text())
    document["profiles"]["default"].update(option)
    bias.write_text(yaml.safe_dump(document))
    settings.POLICY_DIR = folder
    with pytest.raises(ProfileError, match=message):
        profiles("bias")
