"""A model version ready to deploy (the tiny model, built here), and, for the tests that must not
wait for a garak scan, a copy of the policies whose staging rule asks for the training-data
evidence only (production keeps the shipped rule, scans and evaluations included)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from training.tests.conftest import ready  # noqa: F401  (the fixture, shared)


@pytest.fixture
def staging_policies(tmp_path: Path, settings: Any) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    policy = folder / "deployment.deploy.yaml"
    text = policy.read_text()
    staging = text.index("  - when: {environment: staging}")
    policy.write_text(
        text[:staging] + "  - when: {environment: staging}\n"
        "    approvals:\n"
        "      - {role: platform_admin, count: 1}\n"
        "    evidence: [training_data_approved]\n"
        "    expires_after_days: 30\n"
    )
    settings.POLICY_DIR = folder
    return folder


@pytest.fixture
def own_serving_root(settings: Any, tmp_path: Path) -> Path:
    """A serving folder of the test's own (deployment folders, grants, inference logs)."""
    settings.SERVING_ROOT = tmp_path / "serving"
    settings.SERVING_ROOT.mkdir()
    return settings.SERVING_ROOT
