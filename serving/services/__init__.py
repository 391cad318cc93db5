"""Writes of the serving app. Each checks the actor, changes the rows and appends its ledger
entries in one transaction; starting a server runs in a Celery task (``serving.start``).

The services live in modules by sub-domain: ``requests`` (asking for a deployment), ``grants``
(signing a grant on approval, the platform's manifests), ``export`` (the ONNX export on the
worker), ``start`` (starting the model server on the worker), ``supervision`` (its process, and
live deployments whose server stopped), ``lifecycle`` (promotion, retirement, rollback),
``inference_log`` (the log's segments on the ledger), ``feedback`` (ratings of outputs) and
``clients`` (client credentials of the model servers, and the signed lists they read) and
``alerts`` (monitoring thresholds: reviews of crossings, pausing and resuming). The
rules they apply are in ``serving.rules`` and ``serving.specs`` (the declared schemas of a
target and a guard); what they read is in ``serving.selectors``.
"""

from serving.rules import (
    ACTION,
    FEEDBACK_ROLES,
    PROMOTION_OPEN_STATES,
    RUNNING_STATES,
    SERVED_STATES,
    deployment_digest,
)
from serving.selectors import training_data_approved
from serving.services.alerts import (
    deployment_alert_acknowledge,
    deployment_alert_get,
    deployment_alert_list,
    deployment_alert_resolve,
    deployment_monitor_check,
    deployment_pause,
    deployment_resume,
)
from serving.services.clients import (
    client_credential_may_manage,
    client_list_write,
    client_lists_refresh,
    deployment_client_credential_issue,
    deployment_client_credential_revoke,
)
from serving.services.export import deployment_export_onnx
from serving.services.feedback import deployment_feedback_give
from serving.services.grants import deployment_manifests_render, grant_issue, on_deployment_approved
from serving.services.inference_log import inference_logs_summarise
from serving.services.lifecycle import deployment_promote, deployment_retire, deployment_rollback
from serving.services.requests import deployment_request, deployment_request_submit
from serving.services.start import deployment_start
from serving.services.supervision import deployments_supervise
from serving.specs import GUARD_ENTITIES, GUARD_FIELDS, GUARD_MODES, TARGET_FIELDS

__all__ = [
    "ACTION",
    "FEEDBACK_ROLES",
    "GUARD_ENTITIES",
    "GUARD_FIELDS",
    "GUARD_MODES",
    "PROMOTION_OPEN_STATES",
    "RUNNING_STATES",
    "SERVED_STATES",
    "TARGET_FIELDS",
    "client_credential_may_manage",
    "client_list_write",
    "client_lists_refresh",
    "deployment_alert_acknowledge",
    "deployment_alert_get",
    "deployment_alert_list",
    "deployment_alert_resolve",
    "deployment_client_credential_issue",
    "deployment_client_credential_revoke",
    "deployment_digest",
    "deployment_export_onnx",
    "deployment_feedback_give",
    "deployment_manifests_render",
    "deployment_monitor_check",
    "deployment_pause",
    "deployment_promote",
    "deployment_request",
    "deployment_request_submit",
    "deployment_resume",
    "deployment_retire",
    "deployment_rollback",
    "deployment_start",
    "deployments_supervise",
    "grant_issue",
    "inference_logs_summarise",
    "on_deployment_approved",
    "training_data_approved",
]
