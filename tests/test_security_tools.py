"""bandit over the service's code and pip-audit over requirements.lock, run for real as child
processes; every finding must be fixed or accepted with a reason in security/accepted-findings.toml.

pip-audit asks a vulnerability service over the network (``PIP_AUDIT_SERVICE``: ``pypi``, the
default, is PyPI's JSON API; ``osv`` is api.osv.dev, or ``PIP_AUDIT_OSV_URL``). When the service
cannot be reached, or answers for none of the pins, the audit did not happen: it must not pass.
By default the test is then skipped, naming the service and saying the lock was not audited (pytest
shows the reason in its summary: CI machines here reach only the package index, whose per-version
JSON API answers 404); ``SECURITY_AUDIT_REQUIRED=1`` makes it a failure instead, for pipelines
that must audit.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ACCEPTED_FILE = ROOT / "security" / "accepted-findings.toml"
BIN = Path(sys.executable).parent
SERVICES = {
    # name: (what it is, a URL that answers 200 for a release that exists, if the service works)
    "pypi": ("PyPI's JSON API", "https://pypi.org/pypi/pip-audit/2.10.1/json"),
    "osv": ("OSV", os.environ.get("PIP_AUDIT_OSV_URL", "https://api.osv.dev/v1/query")),
}


def _accepted() -> dict[str, Any]:
    with ACCEPTED_FILE.open("rb") as handle:
        return tomllib.load(handle)


def test_the_accepted_findings_file_is_complete() -> None:
    accepted = _accepted()
    for entry in accepted.get("bandit", []):
        assert {"test_id", "path", "reason"} <= entry.keys() and entry["reason"].strip(), entry
    for entry in accepted.get("pip_audit", []):
        assert {"id", "package", "reason", "review_by"} <= entry.keys() and entry["reason"].strip(), entry
        assert isinstance(entry["review_by"], date), f"{entry['id']}: review_by is a date (2026-12-31)"


def test_bandit_finds_nothing_that_is_not_accepted() -> None:
    result = subprocess.run(
        [str(BIN / "bandit"), "-c", "pyproject.toml", "-r", ".", "-f", "json", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.stdout.strip(), f"bandit gave no report (exit status {result.returncode}):\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    assert not report["errors"], report["errors"]
    accepted = _accepted().get("bandit", [])

    def matches(finding: dict[str, Any], entry: dict[str, Any]) -> bool:
        path = finding["filename"].removeprefix("./")
        return finding["test_id"] == entry["test_id"] and fnmatch.fnmatch(path, entry["path"])

    open_findings = [
        f"{f['filename']}:{f['line_number']} {f['test_id']} ({f['issue_severity']}): {f['issue_text']}"
        for f in report["results"]
        if not any(matches(f, entry) for entry in accepted)
    ]
    assert not open_findings, "bandit findings to fix or accept in security/accepted-findings.toml:\n" + "\n".join(
        open_findings
    )
    stale = [e for e in accepted if not any(matches(f, e) for f in report["results"])]
    assert not stale, f"accepted bandit findings that no longer occur (remove them): {stale}"
    scanned = report["metrics"]["_totals"]["loc"]
    assert scanned > 10_000, f"bandit scanned only {scanned} lines: is the exclusion list too wide?"


def _service_unreachable(message: str) -> None:
    if os.environ.get("SECURITY_AUDIT_REQUIRED") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(f"NOT AUDITED (set SECURITY_AUDIT_REQUIRED=1 to fail instead): {message}")


def _probe(service: str) -> None:
    """Fail fast, naming the service, when it cannot answer for a release that exists."""
    name, url = SERVICES[service]
    data = None
    if service == "osv":
        data = json.dumps({"package": {"name": "pip-audit", "ecosystem": "PyPI"}, "version": "2.10.1"}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        _service_unreachable(
            f"pip-audit: the vulnerability service {name} ({url}) cannot be reached from here ({exc}); "
            "requirements.lock was NOT audited"
        )
        return
    if status != 200:
        _service_unreachable(
            f"pip-audit: the vulnerability service {name} answered HTTP {status} for {url}, a release that "
            "exists: it cannot audit pinned versions from here; requirements.lock was NOT audited"
        )


def test_pip_audit_finds_no_vulnerability_that_is_not_accepted() -> None:
    service = os.environ.get("PIP_AUDIT_SERVICE", "pypi")
    assert service in SERVICES, f"PIP_AUDIT_SERVICE: expected one of {sorted(SERVICES)}, got {service!r}"
    name, url = SERVICES[service]
    _probe(service)
    command = [
        str(BIN / "pip-audit"), "-r", "requirements.lock", "--no-deps", "--disable-pip", "-s", service,
        "-f", "json", "--progress-spinner", "off",
    ]  # fmt: skip
    if service == "osv":
        command += ["--osv-url", url]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=540)
    if not result.stdout.strip():
        _service_unreachable(
            f"pip-audit against {name} ({url}) gave no report (exit status {result.returncode}); "
            f"requirements.lock was NOT audited:\n{result.stderr[-2000:]}"
        )
    report = json.loads(result.stdout)
    dependencies = report["dependencies"]
    pins = sum(1 for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line)
    assert len(dependencies) == pins, f"pip-audit read {len(dependencies)} of the lock's {pins} pins"

    accepted = _accepted()
    unaudited_ok = {e["package"].lower() for e in accepted.get("pip_audit_unaudited", [])}
    unaudited = [d for d in dependencies if "skip_reason" in d and d["name"].lower() not in unaudited_ok]
    if len(unaudited) == len(dependencies):
        _service_unreachable(
            f"pip-audit: the vulnerability service {name} ({url}) answered for none of the {pins} pins "
            f"(first: {unaudited[0]['skip_reason']}); requirements.lock was NOT audited"
        )
    assert not unaudited, f"{name} could not audit: " + "; ".join(d["skip_reason"] for d in unaudited)

    today = date.today()
    known = {e["id"]: e for e in accepted.get("pip_audit", [])}
    open_vulns, overdue = [], []
    for dependency in dependencies:
        for vuln in dependency.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            entry = next((known[i] for i in ids if i in known), None)
            where = f"{dependency['name']}=={dependency['version']} {vuln['id']} (fixed in {vuln.get('fix_versions')})"
            if entry is None:
                open_vulns.append(where)
            elif entry["review_by"] < today:
                overdue.append(f"{where}: accepted until {entry['review_by']}")
    assert not open_vulns, "vulnerable pins to upgrade or accept in security/accepted-findings.toml:\n" + "\n".join(
        open_vulns
    )
    assert not overdue, "accepted advisories past their review date:\n" + "\n".join(overdue)
