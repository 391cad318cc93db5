"""Security scans: asking for a garak scan of a model version under a profile, and running it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.checks import profiles
from audits.checks.models import AuditState, SecurityScan, Trigger, Verdict
from audits.checks.services.runs import (
    _beat,
    _check_weights,
    _claim,
    _finish,
    _queue_or_wait,
    _subject,
    require_requester,
)
from audits.ledger.services import ledger_append
from common import artifacts
from common.errors import DomainError
from governance.roles import Role
from registry.models import ModelVersion
from registry.services import model_version_materialise

logger = logging.getLogger(__name__)


def security_scan_request(
    *, actor: Any, model_version: ModelVersion, profile_name: str, trigger: str = Trigger.REQUEST
) -> SecurityScan:
    """Ask for a garak scan of ``model_version`` under a profile of ``policies/audits/security.yaml``."""
    project = model_version.model.project
    require_requester(actor, project, Role.SECURITY_REVIEWER)
    try:
        profile = profiles.profile("security", profile_name)
    except profiles.ProfileError as exc:
        raise DomainError("invalid_profile", str(exc)) from None
    _check_weights(
        model_version, Path(settings.TRAINING_WORK_ROOT) / f"verify-{model_version.pk}-{timezone.now():%s%f}"
    )
    with transaction.atomic():
        scan = SecurityScan.objects.create(
            project=project, model_version=model_version, weights_digest=model_version.weights_digest,
            profile_name=profile_name, profile=profile, trigger=trigger, requested_by=actor,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="security_scan.requested", subject=_subject(scan),
            payload={"model_version": model_version.weights_digest, "model_version_id": str(model_version.pk),
                     "profile": profile_name, "probes": profile["probes"], "trigger": trigger},
        )  # fmt: skip
        _queue_or_wait(scan, actor)
    return scan


def security_scan_execute(*, scan_id: int, idempotency_key: str, worker: str) -> SecurityScan | None:
    """Run a queued scan once (see ``_claim``): check the weights, run garak, store its report,
    record findings (each with the OWASP Top 10 for LLM Applications 2025 categories of its probe,
    ``owasp``) and the verdict. Any error on the way (weights changed, a profile garak
    refuses, the report not stored, garak itself) fails the scan on record at once, with the
    exception's type and message as the reason; the worker lives on."""
    from audits.checks import garak_scan

    scan = _claim(SecurityScan, scan_id, idempotency_key, worker)
    if scan is None:
        return None
    workdir = Path(settings.TRAINING_WORK_ROOT) / f"scan-{scan.pk}"
    shutil.rmtree(workdir, ignore_errors=True)
    last = [0.0]

    def on_line(_: str) -> None:
        import time

        if time.monotonic() - last[0] > 1.0:
            last[0] = time.monotonic()
            _beat(scan)

    try:
        model_version_materialise(scan.model_version, workdir / "model")
        outcome = garak_scan.run_scan(
            model_folder=workdir / "model", probes=list(scan.profile["probes"]), workdir=workdir,
            generations=int(scan.profile.get("generations", 1)), on_line=on_line,
            max_new_tokens=int(scan.profile.get("max_new_tokens", garak_scan.DEFAULT_MAX_NEW_TOKENS)),
        )  # fmt: skip
        passed, reasons = garak_scan.verdict(
            outcome, probes=list(scan.profile["probes"]), max_failure_rate=float(scan.profile["max_failure_rate"])
        )
        report = ""
        if outcome.report_path is not None and outcome.report_path.is_file():
            report, _ = artifacts.put_bytes(outcome.report_path.read_bytes())
    except garak_scan.ProfileError as exc:
        return _finish(scan, state=AuditState.FAILED, failure_reason=f"profile refused: {exc}")
    except DomainError as exc:
        return _finish(scan, state=AuditState.FAILED, failure_reason=exc.message)
    except Exception as exc:  # the scan fails on record with the reason; the worker lives on
        logger.exception("security scan %s failed", scan.pk)
        return _finish(scan, state=AuditState.FAILED, failure_reason=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir / "model", ignore_errors=True)
    findings = [
        {"probe": f.probe, "detector": f.detector, "passed": f.passed, "fails": f.fails, "nones": f.nones,
         "total": f.total, "failure_rate": round(f.failure_rate, 6), "owasp": f.owasp_categories}
        for f in outcome.findings
    ]  # fmt: skip
    return _finish(
        scan, state=AuditState.COMPLETED, verdict=Verdict.PASSED if passed else Verdict.FAILED, reasons=reasons,
        findings=findings, report_digest=report, garak_version=outcome.garak_version,
    )  # fmt: skip
