"""Approval policies: YAML files in ``policies/``, validated against a schema, hashed as a set.

A policy file names one action and lists rules; the first rule whose ``when`` matches the request's
context (project, environment, risk tier) applies::

    action: dataset_version.use_for_training
    rules:
      - when: {risk_tier: high}
        approvals:
          - {role: data_steward, count: 1}
          - {role: compliance_officer, count: 1}
        separation_of_duties: {requester_may_approve: false, one_slot_per_person: true}
        evidence: [personal_data_reviewed]
        expires_after_days: 30

A policy may declare ``context``: fields the requester names with the request (a waiver's
scope: ``environment``, ``deployment``, ``use``), each required or not, with the values or the
pattern it admits; a request without a required one, or with a value it does not admit, is refused.

A monitoring policy (action ``<subject>.monitor``: ``deployment.monitor``) has rules of
``thresholds`` (bounds per metric, ``MONITOR_METRICS``), ``on_breach`` (review, notify, pause) and
``window_minutes`` instead of approvals; see ``serving.services.alerts``.

A malformed file is refused with its file, line and field; the service does not start with it.
The policy-set hash (SHA-256 over every file's name and bytes, in name order) is written with
every decision.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from governance.roles import Role

# risk_class: the EU AI Act class of the AI system a subject belongs to (systems.governed).
CONTEXT_KEYS = ("project", "environment", "risk_tier", "resource_tier", "risk_class")

_WHEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {key: {"type": "string", "minLength": 1} for key in CONTEXT_KEYS},
}

APPROVAL_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["approvals"],
    "properties": {
        "when": _WHEN_SCHEMA,
        "approvals": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role", "count"],
                "properties": {
                    "role": {"enum": [role.value for role in Role if role != Role.AUDITOR]},
                    "count": {"type": "integer", "minimum": 1, "maximum": 10},
                },
            },
        },
        "separation_of_duties": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "requester_may_approve": {"const": False},
                "one_slot_per_person": {"type": "boolean"},
            },
        },
        "evidence": {
            "type": "array",
            "uniqueItems": True,
            "items": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "object",
                        "required": ["check"],
                        "properties": {"check": {"type": "string", "minLength": 1}},
                        "additionalProperties": {"type": ["string", "integer", "number"]},
                    },
                ]
            },
        },
        "expires_after_days": {"type": "integer", "minimum": 1, "maximum": 3650},
    },
}

# Monitoring policies (action ``<subject>.monitor``, e.g. ``deployment.monitor``): per rule, the
# bounds a deployment's traffic must stay within, per window, and what a crossing does. The metric
# names are those of ``serving.monitoring`` (``prompt_chars_psi`` is its drift statistic, the PSI
# of prompt lengths against the baseline window); a bound is the largest value that is still fine.
MONITOR_ACTION_PATTERN = r"\.monitor$"
MONITOR_METRICS: tuple[str, ...] = (
    "prompt_chars_psi", "error_rate", "latency_p95_ms", "guard_hit_rate", "negative_feedback_share",
)  # fmt: skip
_RATE: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
MONITOR_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["thresholds", "on_breach"],
    "properties": {
        "when": _WHEN_SCHEMA,
        "window_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
        "thresholds": {
            "type": "object",
            "propertyNames": {"enum": [*MONITOR_METRICS, "min_requests", "min_ratings"]},
            "properties": {
                "prompt_chars_psi": {"type": "number", "minimum": 0},
                "error_rate": _RATE,
                "latency_p95_ms": {"type": "number", "minimum": 0},
                "guard_hit_rate": _RATE,
                "negative_feedback_share": _RATE,
                "min_requests": {"type": "integer", "minimum": 1},
                "min_ratings": {"type": "integer", "minimum": 1},
            },
        },
        "on_breach": {
            "type": "object",
            "additionalProperties": False,
            "required": ["review"],
            "properties": {
                # Every crossing is reviewed; notify and pause say what else it does.
                "review": {"const": True},
                "notify": {
                    "type": "array",
                    "uniqueItems": True,
                    "items": {"enum": [role.value for role in Role]},
                },
                "pause": {"type": "boolean"},
            },
        },
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["action", "rules"],
    "properties": {
        "action": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"},
        "description": {"type": "string"},
        # Context the requester names (a waiver's scope): each field, whether it is required, and
        # what it may hold. Validated on submission, kept with the request and in its ledger entry.
        "context": {
            "type": "object",
            "propertyNames": {
                "pattern": r"^[a-z][a-z_]*$",
                "not": {"enum": ["project", "risk_tier", "resource_tier", "risk_class"]},
            },
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "required": {"type": "boolean"},
                    "values": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string"}},
                    "pattern": {"type": "string", "minLength": 1},
                    "max_length": {"type": "integer", "minimum": 1, "maximum": 2000},
                    "description": {"type": "string"},
                },
            },
        },
        "rules": {"type": "array", "minItems": 1},
    },
    # A monitoring policy (``<subject>.monitor``) has rules of thresholds; any other, rules of approvals.
    "if": {"required": ["action"], "properties": {"action": {"pattern": MONITOR_ACTION_PATTERN}}},
    "then": {"properties": {"rules": {"items": MONITOR_RULE_SCHEMA}}},
    "else": {"properties": {"rules": {"items": APPROVAL_RULE_SCHEMA}}},
}


class PolicyError(ValueError):
    """A policy file is malformed; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Slot:
    role: Role
    count: int


@dataclass(frozen=True)
class Rule:
    when: dict[str, str]
    slots: tuple[Slot, ...]
    one_slot_per_person: bool
    evidence: tuple[str | dict[str, Any], ...]
    expires_after_days: int | None
    # Monitoring rules only (``<subject>.monitor``): bounds by metric name (``min_requests`` and
    # ``min_ratings`` included), what a crossing does, and the window the metrics are taken over.
    thresholds: dict[str, float] = field(default_factory=dict)
    on_breach: dict[str, Any] = field(default_factory=dict)
    window_s: int = 3600

    def matches(self, context: dict[str, str]) -> bool:
        return all(context.get(key) == value for key, value in self.when.items())

    def describe(self) -> dict[str, Any]:
        if self.thresholds:
            return {
                "when": self.when, "window_s": self.window_s, "thresholds": self.thresholds,
                "on_breach": self.on_breach,
            }  # fmt: skip
        return {
            "when": self.when,
            "approvals": [{"role": s.role.value, "count": s.count} for s in self.slots],
            "one_slot_per_person": self.one_slot_per_person,
            "evidence": list(self.evidence),
            "expires_after_days": self.expires_after_days,
        }


@dataclass(frozen=True)
class ContextField:
    """A context field a requester names (``environment: production``), as the policy declares it."""

    name: str
    required: bool
    values: tuple[str, ...]
    pattern: str
    max_length: int
    description: str

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` for this field, in words; None when nothing is."""
        if not isinstance(value, str) or not value.strip():
            return "a non-empty text" + (f": {self.description}" if self.description else "")
        if len(value) > self.max_length:
            return f"at most {self.max_length} characters"
        if self.values and value not in self.values:
            return f"one of {', '.join(self.values)}, not {value!r}"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"{value!r} does not match {self.pattern}"
        return None


@dataclass(frozen=True)
class Policy:
    action: str
    file: str
    rules: tuple[Rule, ...]
    context: tuple[ContextField, ...] = ()


@dataclass(frozen=True)
class PolicySet:
    hash: str
    policies: dict[str, Policy] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 of its bytes

    def context_fields(self, action: str) -> tuple[ContextField, ...]:
        """The context fields the policy of ``action`` asks the requester to name."""
        policy = self.policies.get(action)
        return policy.context if policy is not None else ()

    def rule_for(self, action: str, context: dict[str, str]) -> Rule | None:
        policy = self.policies.get(action)
        if policy is None:
            return None
        return next((rule for rule in policy.rules if rule.matches(context)), None)


def _line_of(node: Any, path: list[Any]) -> int:
    """The 1-based line of the YAML node at ``path`` (as deep as the path resolves)."""
    for step in path:
        if isinstance(node, yaml.MappingNode):
            match = next((value for key, value in node.value if key.value == step), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            break
    return node.start_mark.line + 1


def _field_name(path: list[Any]) -> str:
    return (
        "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path)) or "(top)"
    )


def _check_evidence_params(where: str, check: str, item: dict[str, Any]) -> None:
    from governance.evidence import check_params

    wanted = check_params(check)
    given = {k: v for k, v in item.items() if k != "check"}
    for param in sorted(set(given) - set(wanted)):
        raise PolicyError(f"{where}: evidence check {check!r} takes no parameter {param!r}")
    for param, kind in wanted.items():
        if param not in given:
            raise PolicyError(f"{where}: evidence check {check!r} needs the parameter {param!r}")
        if not isinstance(given[param], kind) or isinstance(given[param], bool):
            raise PolicyError(f"{where}: parameter {param!r} of {check!r} must be {kind.__name__}")


def parse_policy(
    name: str, text: str, known_evidence: set[str] | None = None, known_actions: set[str] | None = None
) -> Policy:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise PolicyError(f"{name}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if node is None:
        raise PolicyError(f"{name}, line 1: the file is empty")
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        path = list(error.absolute_path)
        raise PolicyError(f"{name}, line {_line_of(node, path)}, field {_field_name(path)}: {error.message}")
    if re.search(MONITOR_ACTION_PATTERN, document["action"]):
        return _monitor_policy(name, node, document)
    if known_actions is not None and document["action"] not in known_actions:
        admitted = ", ".join(sorted(known_actions)) or "none"
        raise PolicyError(
            f"{name}, line {_line_of(node, ['action'])}, field action: no governed subject type admits "
            f"{document['action']!r}; admitted: {admitted}"
        )
    rules = []
    for index, raw in enumerate(document["rules"]):
        roles = [slot["role"] for slot in raw["approvals"]]
        if len(set(roles)) != len(roles):
            path = ["rules", index, "approvals"]
            raise PolicyError(f"{name}, line {_line_of(node, path)}, field {_field_name(path)}: a role has one slot")
        for position, item in enumerate(raw.get("evidence", [])):
            check = item if isinstance(item, str) else item["check"]
            path = ["rules", index, "evidence", position]
            where = f"{name}, line {_line_of(node, path)}, field {_field_name(path)}"
            if known_evidence is not None and check not in known_evidence:
                raise PolicyError(
                    f"{where}: unknown evidence check {check!r}; known: {', '.join(sorted(known_evidence)) or 'none'}"
                )
            if known_evidence is not None:
                _check_evidence_params(where, check, {} if isinstance(item, str) else item)
        sod = raw.get("separation_of_duties", {})
        rules.append(
            Rule(
                when=dict(raw.get("when", {})),
                slots=tuple(Slot(Role(slot["role"]), slot["count"]) for slot in raw["approvals"]),
                one_slot_per_person=sod.get("one_slot_per_person", True),
                evidence=tuple(raw.get("evidence", [])),
                expires_after_days=raw.get("expires_after_days"),
            )
        )
    for key, spec in (document.get("context") or {}).items():
        try:
            re.compile(spec.get("pattern", ""))
        except re.error as exc:
            path = ["context", key, "pattern"]
            where = f"{name}, line {_line_of(node, path)}, field {_field_name(path)}"
            raise PolicyError(f"{where}: not a pattern ({exc})") from None
    fields = tuple(
        ContextField(
            name=key, required=spec.get("required", False), values=tuple(spec.get("values", ())),
            pattern=spec.get("pattern", ""), max_length=spec.get("max_length", 200),
            description=spec.get("description", ""),
        )
        for key, spec in sorted((document.get("context") or {}).items())
    )  # fmt: skip
    return Policy(action=document["action"], file=name, rules=tuple(rules), context=fields)


def _monitor_policy(name: str, node: Any, document: dict[str, Any]) -> Policy:
    """A monitoring policy (its schema already checked): each rule bounds at least one metric.
    Monitoring is not an approval action: no subject type needs to admit it."""
    if document.get("context"):
        path = ["context"]
        raise PolicyError(
            f"{name}, line {_line_of(node, path)}, field context: a monitoring policy takes no requester context"
        )
    rules = []
    for index, raw in enumerate(document["rules"]):
        if not set(raw["thresholds"]) & set(MONITOR_METRICS):
            path = ["rules", index, "thresholds"]
            raise PolicyError(
                f"{name}, line {_line_of(node, path)}, field {_field_name(path)}: bounds no metric; "
                f"name at least one of {', '.join(MONITOR_METRICS)}"
            )
        rules.append(
            Rule(
                when=dict(raw.get("when", {})), slots=(), one_slot_per_person=True, evidence=(),
                expires_after_days=None, thresholds=dict(raw["thresholds"]),
                on_breach={"review": raw["on_breach"]["review"], "notify": list(raw["on_breach"].get("notify", [])),
                           "pause": raw["on_breach"].get("pause", False)},
                window_s=60 * raw.get("window_minutes", 60),
            )
        )  # fmt: skip
    return Policy(action=document["action"], file=name, rules=tuple(rules))


def load_policy_set(
    folder: Path, known_evidence: set[str] | None = None, known_actions: set[str] | None = None
) -> PolicySet:
    """The policy set in ``folder``; with ``known_evidence`` and ``known_actions`` (what the apps
    registered), a file naming another evidence check, or an action no subject type admits, is
    refused."""
    if not folder.is_dir():
        raise PolicyError(f"{folder}: the policy folder does not exist")
    files = sorted(folder.glob("*.yaml"))
    digest = hashlib.sha256()
    policies: dict[str, Policy] = {}
    file_digests: dict[str, str] = {}
    for path in files:
        data = path.read_bytes()
        file_digests[path.name] = hashlib.sha256(data).hexdigest()
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"{path.name}: not UTF-8") from None
        policy = parse_policy(path.name, text, known_evidence, known_actions)
        if policy.action in policies:
            raise PolicyError(f"{path.name}: action {policy.action} is also defined in {policies[policy.action].file}")
        policies[policy.action] = policy
    return PolicySet(hash="sha256:" + digest.hexdigest(), policies=policies, files=file_digests)


@cache
def _cached(
    folder: str, evidence: frozenset[str], actions: frozenset[str], stamp: tuple[tuple[str, float, int], ...]
) -> PolicySet:
    return load_policy_set(Path(folder), set(evidence), set(actions))


def current_policy_set() -> PolicySet:
    """The policy set on disk now (re-read when a file changes: name, mtime and size)."""
    from django.conf import settings

    from governance.evidence import known_checks
    from governance.subjects import subject_actions

    folder = str(settings.POLICY_DIR)
    # Asked on every decision: one stat per file (what glob and Path.stat cost twice over).
    try:
        with os.scandir(folder) as found:
            stamp = tuple(
                sorted((e.name, (st := e.stat()).st_mtime_ns, st.st_size) for e in found if e.name.endswith(".yaml"))
            )
    except FileNotFoundError:
        stamp = ()  # loading says what is wrong
    return _cached(folder, frozenset(known_checks()), frozenset(subject_actions()), stamp)
