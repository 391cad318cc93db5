"""Writes of the reports app: asking for a report, generating and signing it on the worker; and
the check of a report PDF against the ledger.

A report cites a signed checkpoint of the ledger and, per cited fact, the ledger index of the
entry it comes from; every cited entry lies inside that checkpoint's tree, and the facts it states
are claims that ``report verify`` checks against those entries. The PDF is signed (PAdES) with the
report-signing key (``REPORTS_SIGNING_KEY_FILE``, ECDSA or RSA) under the organisation's
certificate chain (``REPORTS_SIGNING_CERTIFICATE_FILE``; a labelled self-signed one by default),
timestamped when ``REPORTS_TIMESTAMP_URL`` is set; its SHA-256 is a ledger entry
(``report.generated``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from audits.reports.models import ReportKind, ReportRun, ReportState
from common import artifacts
from common.claims import ClaimedJobs, worker_identity
from common.errors import Conflict, DomainError, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.models import Project
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role

READERS = {Role.COMPLIANCE_OFFICER, Role.AUDITOR}
MODEL_KINDS = (ReportKind.ANNEX_IV, ReportKind.DPIA)
SYSTEM_KINDS = (ReportKind.AI_SYSTEM_ANNEX_IV,)
CERTIFICATE_YEARS = 10


def _invalid(field_name: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field_name}: {message}", fields={field_name: [message]})


def _subject(run: ReportRun) -> Subject:
    return Subject("report", str(run.report_id))


def _require_reader(actor: Any, project: Project | None) -> None:
    if is_platform_admin(actor):
        return
    if project is None:
        raise PermissionDenied("permission_denied", "an organisation-wide report needs a platform admin")
    if not project_roles_held(actor, project):
        raise DomainError("not_found", f"no project {project.slug}", status_code=404)
    if not READERS & project_roles_held(actor, project):
        raise PermissionDenied("permission_denied", f"reports need compliance_officer or auditor in {project.slug}")


def report_request(
    *,
    actor: Any,
    kind: str,
    period_start: dt.date,
    period_end: dt.date,
    project: Project | None = None,
    model_version: Any = None,
    ai_system: Any = None,
) -> ReportRun:
    """Ask for a report (compliance officers and auditors of the project; platform admins for the
    whole organisation). It is generated on the worker; the row shows its progress. A model
    version's documents name ``model_version``; an AI system's name ``ai_system`` (an
    ``systems.models.AISystem``), and the project is theirs."""
    if kind not in ReportKind.values:
        raise _invalid("kind", f"one of {', '.join(ReportKind.values)}, got {kind!r}")
    for name, value in (("period_start", period_start), ("period_end", period_end)):
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            raise _invalid(name, f"a date, got {value!r}")
    if period_end < period_start:
        raise _invalid("period_end", f"the period ends ({period_end}) before it starts ({period_start})")
    latest = timezone.localdate() + dt.timedelta(days=366)
    if period_end > latest:
        raise _invalid("period_end", f"{period_end} is more than a year ahead; the latest accepted is {latest}")
    if kind in MODEL_KINDS:
        if model_version is None:
            raise _invalid("model_version", f"{ReportKind(kind).label} documents one model version: choose one")
        if project is not None and model_version.model.project_id != project.pk:
            raise _invalid("model_version", f"model version {model_version.pk} belongs to another project")
        project = model_version.model.project
    elif model_version is not None:
        raise _invalid("model_version", f"a {kind} report is not about one model version")
    if kind in SYSTEM_KINDS:
        if ai_system is None:
            raise _invalid("ai_system", f"{ReportKind(kind).label} documents one AI system: choose one")
        if project is not None and ai_system.project_id != project.pk:
            raise _invalid("ai_system", f"AI system {ai_system.slug} belongs to another project")
        project = ai_system.project
    elif ai_system is not None:
        raise _invalid("ai_system", f"a {kind} report is not about one AI system")
    _require_reader(actor, project)
    with transaction.atomic():
        run = ReportRun.objects.create(
            kind=kind, project=project, model_version_id=model_version.pk if model_version else None,
            ai_system_id=ai_system.pk if ai_system else None, period_start=period_start, period_end=period_end,
            requested_by=actor,
        )  # fmt: skip
        about = {"ai_system": run.ai_system_id} if run.ai_system_id is not None else {}
        ledger_append(
            actor=actor, action="report.requested", subject=_subject(run),
            payload={"kind": kind, "project": project.slug if project else None, "model_version": run.model_version_id,
                     **about, "period_start": period_start.isoformat(), "period_end": period_end.isoformat()},
        )  # fmt: skip
        dispatch_on_commit("reports.generate", args=(run.pk,), queue=settings.REPORTS_QUEUE)
    return run


# --- The service's report-signing certificate ----------------------------------------------------


def _signing_error(exc: Exception) -> DomainError:
    return DomainError("report_signing_misconfigured", str(exc))


def _embedded_signing_default() -> bool:
    """Neither the key nor the certificate file is configured: the service makes its own."""
    keys = Path(settings.VAR_DIR) / "keys"
    return (
        Path(settings.REPORTS_SIGNING_KEY_FILE) == keys / "report-signing-key.pem"
        and Path(settings.REPORTS_SIGNING_CERTIFICATE_FILE) == keys / "report-signing-certificate.pem"
    )


def _trust_anchors() -> list[Any]:
    from audits.reports.pdf.signing_keys import ANCHORS_SETTING, SigningConfigError, load_certificates

    path = settings.REPORTS_TRUST_ANCHORS_FILE
    if path is None:
        return []
    try:
        anchors = load_certificates(Path(path), ANCHORS_SETTING)
    except SigningConfigError as exc:
        raise _signing_error(exc) from None
    if not anchors:
        raise DomainError("report_signing_misconfigured", f"{ANCHORS_SETTING}: {path} holds no certificate")
    return anchors


def _signer(*, generate: bool = True) -> Any:
    """The report-signing key and chain (``signing_keys.SigningIdentity``), checked. The embedded
    default's key and self-signed certificate are made on first use (``None`` when ``generate``
    is false and they are not made yet). A misconfiguration raises ``DomainError`` naming the
    setting."""
    from audits.reports.pdf.signing_keys import (
        CERTIFICATE_SETTING,
        SigningConfigError,
        check_identity,
        ensure_embedded_default,
        load_certificates,
        load_private_key,
    )

    key_path = Path(settings.REPORTS_SIGNING_KEY_FILE)
    certificate_path = Path(settings.REPORTS_SIGNING_CERTIFICATE_FILE)
    now = timezone.now().replace(microsecond=0)
    try:
        if _embedded_signing_default() and not (key_path.exists() and certificate_path.exists()):
            if not generate:
                return None
            ensure_embedded_default(key_path, certificate_path, origin=settings.LEDGER_ORIGIN, now=now)
        return check_identity(
            load_private_key(key_path), load_certificates(certificate_path, CERTIFICATE_SETTING), _trust_anchors(),
            now=now, certificate_path=certificate_path,
        )  # fmt: skip
    except SigningConfigError as exc:
        raise _signing_error(exc) from None


def report_signing_problem() -> str | None:
    """What is wrong with the report-signing settings, for the system check (``None``: nothing)."""
    try:
        _signer(generate=False)
        trusted_certificates()
    except DomainError as exc:
        return exc.message
    return None


def trusted_certificates() -> list[Any]:
    """The certificates ``report verify`` trusts: every certificate the service has signed reports
    under (``REPORTS_CERTIFICATE_FILE``; earlier keys' stay, for old reports) and the configured
    trust anchors (``REPORTS_TRUST_ANCHORS_FILE``)."""
    from cryptography import x509

    path = Path(settings.REPORTS_CERTIFICATE_FILE)
    try:
        signed_under = list(x509.load_pem_x509_certificates(path.read_bytes())) if path.is_file() else []
    except (OSError, ValueError) as exc:
        problem = f"REPORTS_CERTIFICATE_FILE: cannot read {path}: {exc}"
        raise DomainError("report_signing_misconfigured", problem) from None
    return signed_under + _trust_anchors()


def service_certificate_get(signer: Any = None) -> Any:
    """The certificate reports are signed under now (``signer``: a ``SigningIdentity``, else the
    configured one), recorded in ``REPORTS_CERTIFICATE_FILE`` on first use."""
    import os

    from cryptography.hazmat.primitives.serialization import Encoding

    certificate = (signer or _signer()).certificate
    path = Path(settings.REPORTS_CERTIFICATE_FILE)
    if any(known == certificate for known in trusted_certificates()):
        return certificate
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(certificate.public_bytes(Encoding.PEM))
        handle.flush()
        os.fsync(handle.fileno())
    return certificate


def sign_report_pdf(pdf: bytes, *, reason: str, signed_at: dt.datetime) -> bytes:
    """Sign a rendered report (or letter) with the service's report-signing key and certificate
    chain, timestamped by ``REPORTS_TIMESTAMP_URL`` when set: the one place every signed PDF of
    the service is signed. A timestamp authority that fails fails the signing (``DomainError``
    naming it); no PDF goes out without the timestamp configured, nor one that does not verify
    against ``trusted_certificates()`` (checked after signing: about 0.1 s)."""
    from audits.reports.pdf import sign_pdf, verify_pdf_signature
    from audits.reports.pdf.signing import timestamper
    from audits.reports.pdf.verification import TIMESTAMP_INVALID

    signer = _signer()
    certificate = service_certificate_get(signer)
    url = settings.REPORTS_TIMESTAMP_URL
    try:
        signed = sign_pdf(
            pdf, private_key=signer.private_key, certificate=certificate, chain=signer.chain, reason=reason,
            signed_at=signed_at, timestamps=timestamper(url) if url else None,
        )  # fmt: skip
    except OSError as exc:  # pyHanko's TimestampRequestError is one, and so are timeouts and refusals
        if not url:
            raise
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        problem = f"REPORTS_TIMESTAMP_URL: the timestamp authority {url} gave no timestamp ({detail})"
        raise DomainError("timestamp_unavailable", problem) from None
    # No PDF goes out that `report verify` here would refuse (a TSA whose root is not an anchor, say).
    check = verify_pdf_signature(signed, trusted=trusted_certificates())
    if not check.ok:
        failure = check.reason or ""
        timestamp_failed = failure.startswith(TIMESTAMP_INVALID)
        at_fault = "REPORTS_TRUST_ANCHORS_FILE" if timestamp_failed else "REPORTS_SIGNING_CERTIFICATE_FILE"
        problem = f"{at_fault}: the signed PDF does not verify against the trusted certificates: {failure}"
        raise DomainError("report_signing_misconfigured", problem)
    return signed


# --- Generation (on the worker) ------------------------------------------------------------------


def _progress(run: ReportRun, percent: int, step: str) -> None:
    ReportRun.objects.filter(pk=run.pk).update(progress=percent, step=step[:200])


_REPORT_JOBS = ClaimedJobs(ReportRun, "state", ReportState.QUEUED, ReportState.RUNNING, "created_at", "REPORTS_LEASE_S")


def _claim(report_pk: int) -> bool:
    """Claim a queued run, or take over a running one whose worker died (see ``common.claims``)."""
    me = worker_identity()
    if _REPORT_JOBS.claim(report_pk, me):
        return True
    return _REPORT_JOBS.take_over(report_pk, me, progress=0, step="taken over from a lost worker") is not None


def report_generate(*, report_pk: int) -> ReportRun | None:
    """Build, sign and store the report; record its digest. Claimed by a conditional update, so a
    second delivery does nothing, unless the worker that claimed it died (then it is taken over
    and generated from the start: nothing is recorded before the final transaction). A failure
    leaves the run failed with the reason, on record."""
    from audits.ledger.receipts import entry_receipts
    from audits.ledger.selectors import latest_checkpoint
    from audits.ledger.services import checkpoint_create
    from audits.reports import builders
    from audits.reports.pdf import build_pdf, cited_indexes, receipt_indexes

    if not _claim(report_pk):
        return None
    run = ReportRun.objects.select_related("project", "requested_by").get(pk=report_pk)
    try:
        _progress(run, 5, "signing a ledger checkpoint")
        checkpoint_create()
        checkpoint = latest_checkpoint()
        assert checkpoint is not None  # the request itself is an entry
        document = builders.build(
            run, checkpoint=checkpoint, progress=lambda percent, step: _progress(run, percent, step)
        )
        # The SCITT receipts of the cited entries (at most RECEIPTS_LIMIT, the claims' first), in the
        # report's own checkpoint, embedded in the signed revision.
        document = replace(document, receipts=entry_receipts(receipt_indexes(document), checkpoint=checkpoint))
        _progress(run, 80, "rendering the PDF")
        pdf = build_pdf(document)
        _progress(run, 90, "signing the PDF")
        signed = sign_report_pdf(
            pdf, reason=f"{run.get_kind_display()}, ledger checkpoint {checkpoint.tree_size}",
            signed_at=document.generated_at,
        )  # fmt: skip
        sha256, size = artifacts.put_bytes(signed)
    except Exception as exc:  # any failure is the run's, recorded; the worker stays up
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        with transaction.atomic():
            if not ReportRun.objects.filter(pk=run.pk, state=ReportState.RUNNING, claimed_by=run.claimed_by).update(
                state=ReportState.FAILED, error=reason[:2000], finished_at=timezone.now()
            ):
                return None
            ledger_append(actor=run.requested_by, action="report.failed", subject=_subject(run),
                          payload={"reason": reason[:2000]})  # fmt: skip
        run.refresh_from_db()
        return run
    with transaction.atomic():
        # Only the current claimant records the result (a worker that lost its claim records nothing).
        if not ReportRun.objects.filter(pk=run.pk, state=ReportState.RUNNING, claimed_by=run.claimed_by).update(
            state=ReportState.DONE, progress=100, step="done", pdf_sha256=sha256, pdf_size=size,
            checkpoint_size=checkpoint.tree_size, finished_at=timezone.now(),
        ):  # fmt: skip
            return None
        entry = ledger_append(
            actor=run.requested_by, action="report.generated", subject=_subject(run),
            payload={"kind": run.kind, "sha256": sha256, "size": size, "checkpoint_size": checkpoint.tree_size,
                     "cited_entries": len(cited_indexes(document))},
        )  # fmt: skip
        ReportRun.objects.filter(pk=run.pk).update(ledger_index=entry.index)
    run.refresh_from_db()
    return run


def report_runs_reap(*, stale_queued_s: float | None = None) -> int:
    """Put back the runs whose worker was lost: running under a claim that is abandoned (see
    ``common.claims``), or queued for longer than ``stale_queued_s`` (default ``REPORTS_LEASE_S``:
    their message was lost with a worker that died twice on it). Each is queued again through the
    outbox; generation is idempotent, so a run that was only slow is not done twice. Returns how
    many."""
    return _REPORT_JOBS.reap(
        task="reports.generate", queue=settings.REPORTS_QUEUE, stale_queued_s=stale_queued_s,
        progress=0, step="requeued: worker lost",
    )  # fmt: skip


# --- Checking a report ---------------------------------------------------------------------------


@dataclass
class ReportCheck:
    ok: bool
    reason: str = ""
    report_id: str = ""
    kind: str = ""
    checkpoint_size: int | None = None
    cited: int = 0
    claims: int = 0
    draft_notice: str = ""


def report_verify(pdf: bytes, *, progress: Callable[[str], None] | None = None) -> ReportCheck:
    """Check a report PDF: the signature is the service's and covers the whole file unchanged; the
    checkpoint it cites is one the ledger signed (a known key's signature, and a stored checkpoint
    with that size and root); with witnesses configured, the witness policy holds (no co-signed
    tree the ledger does not hold, the quorum met); each cited entry's stored bytes, hashed anew,
    are included in that checkpoint's tree."""
    from audits.ledger import merkle, notes
    from audits.ledger.models import Checkpoint, Entry
    from audits.ledger.selectors import inclusion_proof
    from audits.ledger.verification import known_verifiers
    from audits.reports.pdf import ReportPdfError, read_pdf, verify_pdf_signature

    say = progress or (lambda _line: None)
    signature = verify_pdf_signature(pdf, trusted=trusted_certificates())
    if not signature.ok:
        return ReportCheck(ok=False, reason=f"signature: {signature.reason}")
    stamped = f", timestamped {signature.timestamped_at.isoformat()}" if signature.timestamped_at else ""
    say(f"signature: valid, by {signature.signer}, covering the whole file{stamped}")
    try:
        info = read_pdf(pdf)
    except ReportPdfError as exc:
        return ReportCheck(ok=False, reason=f"metadata: {exc}")
    check = ReportCheck(ok=False, report_id=info.report_id, kind=info.kind, cited=len(info.cited_indexes))
    try:
        cited = notes.verify(info.checkpoint_text, known_verifiers(), origin=settings.LEDGER_ORIGIN)
    except notes.NoteError as exc:
        check.reason = f"checkpoint: not signed by the ledger ({exc})"
        return check
    check.checkpoint_size = cited.size
    stored = Checkpoint.objects.filter(tree_size=cited.size).values_list("root", flat=True)
    if not any(bytes(root) == cited.root for root in stored):
        check.reason = f"checkpoint: the ledger never signed a checkpoint of size {cited.size} with this root"
        return check
    say(f"checkpoint: size {cited.size}, signed by the ledger and stored")
    if settings.LEDGER_WITNESSES:  # the witness policy, as ledger verify applies it
        from llmops_ledger_verify.replay import VerificationFailed as WitnessFailure

        from audits.ledger.witness.verify import check_quorum

        try:
            outcome = check_quorum()
        except WitnessFailure as exc:
            check.reason = f"witnesses: {exc}"
            return check
        say(f"witnesses: co-signed checkpoints agree with the ledger, up to size {outcome.witnessed_size}")
    bodies: dict[int, bytes] = {}  # the proven entries' bytes, which the claims are checked against
    for index in info.cited_indexes:
        if not 0 <= index < cited.size:
            check.reason = f"entry {index}: outside the checkpoint's tree of {cited.size} entries"
            return check
        row = Entry.objects.filter(index=index).values_list("body", "leaf_hash").first()
        if row is None:
            check.reason = f"entry {index}: not in the ledger"
            return check
        # The entry's own bytes are what the checkpoint vouches for: prove those, not the stored hash.
        bodies[index] = bytes(row[0])
        leaf = merkle.leaf_hash(bodies[index])
        if leaf != bytes(row[1]):
            check.reason = f"entry {index}: its bytes do not hash to its stored leaf hash: it was changed"
            return check
        try:
            merkle.verify_inclusion(index, cited.size, leaf, inclusion_proof(index, cited.size), cited.root)
        except merkle.ProofError as exc:
            check.reason = f"entry {index}: not included in the checkpoint ({exc})"
            return check
    say(f"cited entries: {len(info.cited_indexes)}, each included in the checkpoint")
    from llmops_ledger_verify.receipt import verify_receipt
    from llmops_ledger_verify.replay import VerificationFailed

    from audits.reports.pdf import read_receipts

    try:
        receipts = read_receipts(pdf)
    except ReportPdfError as exc:
        check.reason = f"receipts: {exc}"
        return check
    for index, receipt in receipts.items():
        if index not in bodies:
            check.reason = f"receipt of entry {index}: the report does not cite that entry"
            return check
        try:
            proven = verify_receipt(receipt, known_verifiers(), entry=bodies[index], origin=settings.LEDGER_ORIGIN)
        except VerificationFailed as exc:
            check.reason = f"receipt of entry {index}: {exc}"
            return check
        if proven["tree_size"] != cited.size:
            check.reason = f"receipt of entry {index}: for tree size {proven['tree_size']}, not the report's"
            return check
    say(f"receipts: {len(receipts)} embedded (RFC 9942 COSE), each verified with the ledger's key")
    from audits.reports.claims import first_false_claim

    false = first_false_claim(info.claims, bodies)
    if false is not None:
        check.reason = false
        return check
    say(f"claims: {len(info.claims)}, each borne out by the entry it cites")
    check.claims = len(info.claims)
    check.draft_notice = info.draft_notice
    check.ok = True
    return check


def report_pdf(run: ReportRun) -> bytes:
    """The signed PDF of a finished run, checked against its recorded digest."""
    if run.state != ReportState.DONE:
        raise Conflict("report_not_ready", f"report {run.report_id} is {run.state}")
    if not artifacts.verify_blob(run.pdf_sha256):
        raise Conflict("report_damaged", f"the stored PDF of report {run.report_id} no longer matches its digest")
    return artifacts.open_blob(run.pdf_sha256).read_bytes()
