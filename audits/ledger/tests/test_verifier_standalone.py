"""The offline verifier as an auditor gets it: ``verifier/`` pip-installed alone into an empty
virtualenv, run from a folder outside the checkout over a bundle the service exported.

pip installs from the package indexes this machine's pip is configured with (``cryptography`` and
the build backend come from there), exactly as it would for an auditor. The folder is copied
first, so concurrent runs of the suite never build in the same tree.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings

from audits.ledger.keys import load_signer_keys
from audits.ledger.services import checkpoint_create
from audits.ledger.tests.test_verify import export
from conftest import ROOT

# What an empty virtualenv holds after the install: the verifier, cryptography and its own
# dependencies, and the venv's installers. Django above all must not be there.
ALLOWED_DISTRIBUTIONS = {"llmops-ledger-verify", "cryptography", "cffi", "pycparser", "pip", "setuptools"}


def _auditor_env() -> dict[str, str]:
    """The environment of a shell outside the project: none of the suite's Python or Django settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO", "VIRTUAL_ENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(args: list[str | Path], cwd: Path, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_auditor_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def auditor_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("auditor")
    source = home / "verifier"
    shutil.copytree(ROOT / "verifier", source, ignore=shutil.ignore_patterns("__pycache__", "build", "dist"))
    venv = home / "venv"
    made = _run([sys.executable, "-m", "venv", venv], cwd=home)
    assert made.returncode == 0, made.stderr
    installed = _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", source], cwd=home, timeout=240)
    assert installed.returncode == 0, f"pip install of the verifier failed:\n{installed.stdout}\n{installed.stderr}"
    listed = _run([venv / "bin" / "python", "-m", "pip", "list", "--format=json"], cwd=home)
    names = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert "llmops-ledger-verify" in names and names <= ALLOWED_DISTRIBUTIONS, names
    return venv


@pytest.mark.django_db
def test_an_auditor_installs_the_verifier_alone_and_verifies_an_export_from_any_folder(
    auditor_venv: Path, append: Callable[..., object], tmp_path: Path
) -> None:
    append(6)
    checkpoint_create()
    append(2)  # two entries after the checkpoint: checked one by one, signed by nothing yet
    bundle = export(tmp_path)
    elsewhere = tmp_path / "auditor-desk"
    elsewhere.mkdir()
    command = auditor_venv / "bin" / "ledger-verify"

    no_django = _run([auditor_venv / "bin" / "python", "-c", "import django"], cwd=elsewhere)
    assert no_django.returncode == 1 and "ModuleNotFoundError" in no_django.stderr

    honest = _run([command, bundle], cwd=elsewhere)
    assert honest.returncode == 0, honest.stderr
    assert "OK 8 entries, 1 checkpoints verified" in honest.stdout
    assert "the last 2 entries follow the last checkpoint" in honest.stdout
    pinned = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)[0].verifier().encode()
    as_module = _run(
        [auditor_venv / "bin" / "python", "-m", "llmops_ledger_verify", bundle, "--key", pinned], cwd=elsewhere
    )
    assert as_module.returncode == 0 and "keys taken from the bundle" not in as_module.stdout, as_module.stderr

    # One entry rewritten, its readable copy with it, so only the hash can tell: the signed root
    # no longer matches, and the verifier names the entry.
    lines = (bundle / "entries.jsonl").read_text().splitlines()
    record = json.loads(lines[3])
    record["entry"]["payload"]["i"] = 99
    body = json.dumps(record["entry"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    record["body_b64"] = base64.b64encode(body).decode()
    lines[3] = json.dumps(record)
    (bundle / "entries.jsonl").write_text("\n".join(lines) + "\n")
    tampered = _run([command, bundle, "--key", pinned], cwd=elsewhere)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert tampered.stderr.startswith("FAIL entry 3: its bytes do not hash to its stored leaf hash"), tampered.stderr
    assert "Traceback" not in tampered.stderr

    for usage in ([], [elsewhere / "no-such-bundle"], [bundle, "--key", "not-a-key"]):
        wrong = _run([command, *usage], cwd=elsewhere)
        assert wrong.returncode == 2 and "usage: ledger-verify" in wrong.stderr, (usage, wrong.stderr)
