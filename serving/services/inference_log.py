"""The inference log on the ledger: each run appends, per deployment, one entry for the log lines
written since the last one (their counts and their SHA-256), so the log cannot be rewritten
unseen."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from audits.ledger.services import ledger_append
from serving.models import Deployment, DeploymentState
from serving.rules import deployment_subject
from serving.selectors import inference_log_path, system_account

logger = logging.getLogger(__name__)


def inference_logs_summarise() -> int:
    """Append one ledger entry per deployment for the log lines written since the last one:
    counts by status and guard action, and the SHA-256 of those bytes. Returns the segments made.

    A line that cannot be read (torn by a crash, corrupted; see
    ``serving.monitoring.read_log_skipping_unreadable``) is counted in ``unreadable_lines``, not
    in the requests; its bytes are still in the segment and its hash, so it is read once. A log
    that cannot be read at all is logged and left for the next run; the other deployments' logs
    are summarised all the same.

    Each deployment with a new segment then has its log judged against its monitoring policy
    (``serving.services.alerts.deployment_monitor_check``: reviews, mail, pause); a failure of
    that judgement is logged and leaves the segment recorded."""
    made = 0
    for deployment in Deployment.objects.exclude(state=DeploymentState.REQUESTED):
        try:
            recorded = _inference_log_summarise(deployment)
            made += recorded
            if recorded:
                _monitor(deployment)
        except OSError:
            logger.exception("inference log of deployment %s: cannot be read; left for the next run", deployment.pk)
        except IntegrityError:
            # A concurrent run recorded this segment first (its transaction rolled back, entry included).
            logger.info("inference log of deployment %s: already summarised by another run", deployment.pk)
    return made


def _monitor(deployment: Deployment) -> None:
    from serving.services.alerts import deployment_monitor_check

    try:
        deployment_monitor_check(deployment_id=deployment.pk)
    except Exception:  # the segment is on record; the next segment judges the log again
        logger.exception("monitoring of deployment %s failed; judged again with its next segment", deployment.pk)


def _inference_log_summarise(deployment: Deployment) -> int:
    """One deployment's new segment, under its row's lock: overlapping runs take turns, and the
    later one starts where the earlier one's segment ended."""
    with transaction.atomic():
        Deployment.objects.select_for_update().values_list("pk", flat=True).get(pk=deployment.pk)
        return _inference_log_segment_record(deployment)


def _inference_log_segment_record(deployment: Deployment) -> int:
    import hashlib

    from serving.models import InferenceLogSegment
    from serving.monitoring import segment_summary

    log = inference_log_path(deployment)
    if not log.is_file():
        return 0
    last = deployment.log_segments.order_by("-end_offset").first()
    start = last.end_offset if last else 0
    with log.open("rb") as handle:
        handle.seek(start)
        data = handle.read()
    data = data[: data.rfind(b"\n") + 1]  # whole lines only
    if not data:
        return 0
    summary = segment_summary(data)
    if summary["unreadable_lines"]:
        logger.warning("inference log of deployment %s: %d unreadable line(s) from byte %d", deployment.pk,
                       summary["unreadable_lines"], start)  # fmt: skip
    digest = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        entry = ledger_append(
            actor=system_account(), action="deployment.inference_log", subject=deployment_subject(deployment),
            payload={"start_offset": start, "end_offset": start + len(data), "sha256": digest, **summary},
        )  # fmt: skip
        InferenceLogSegment.objects.create(
            deployment=deployment, start_offset=start, end_offset=start + len(data),
            requests=summary["requests"], summary=summary, sha256=digest, ledger_index=entry.index,
        )  # fmt: skip
    return 1
