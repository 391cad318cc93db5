"""Scan and evaluation profiles: ``policies/audits/security.yaml`` and ``policies/audits/bias.yaml``.

Validated when loaded (file, profile and field in the error): a security profile may name only
probes verified to run offline here, so a profile with a hub-dependent or unknown probe is refused
before anything runs, with the probe named.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from audits.checks.bias import BOUND_RULES, METRICS
from audits.checks.special_category import SPECIAL_CATEGORIES

METRIC_NAMES = set(METRICS)
BOUND_NAMES = {"demographic_parity_difference", "equalized_odds_difference"} | {f"{m}_difference" for m in METRICS}


class ProfileError(ValueError):
    pass


_COMMON = {
    "description": {"type": "string"},
    "rescan_every_days": {"type": "integer", "minimum": 1, "maximum": 3650},
}
SECURITY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["probes", "max_failure_rate"],
    "properties": {
        **_COMMON,
        "probes": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string"}},
        "max_failure_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "generations": {"type": "integer", "minimum": 1, "maximum": 20},
        "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
    },
}
BIAS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["positive_label", "metrics", "bounds"],
    "properties": {
        **_COMMON,
        "positive_label": {"type": "string", "minLength": 1},
        "metrics": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": sorted(METRIC_NAMES)}},
        "bounds": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"enum": sorted(BOUND_NAMES)},
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "max_unparsed_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        # The bootstrap of the confidence intervals (audits.checks.bias): fewer than 200 resamples
        # leave a 95% interval's ends to 5 draws; more than 10,000 add digits, not knowledge.
        "bootstrap_resamples": {"type": "integer", "minimum": 200, "maximum": 10_000},
        "bootstrap_seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "min_group_size": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "bound_rule": {"enum": list(BOUND_RULES)},
        # Features that are special-category data (GDPR Art. 9) whatever the requester says: a
        # request evaluating one must record its legal basis (audits.checks.special_category).
        "special_category_features": {
            "type": "object",
            "propertyNames": {"minLength": 1},
            "additionalProperties": {"enum": sorted(SPECIAL_CATEGORIES)},
        },
    },
}


def probe_problem(probe: str) -> str | None:
    """Why ``probe`` may not be in a profile, or ``None``: the offline allow-list, without garak."""
    from audits.checks.garak_scan import HUB_DEPENDENT, OFFLINE_PROBES

    family = probe.split(".")[0]
    for name in (probe, family):
        if name in HUB_DEPENDENT:
            return f"probe {probe!r} cannot run offline: {HUB_DEPENDENT[name]}"
    if probe not in OFFLINE_PROBES:
        return f"probe {probe!r} is unknown or has not been verified to run offline here"
    return None


def _load(path: Path, schema: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise ProfileError(f"{path.name}: the {kind} profiles file is missing from {path.parent}")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path.name}: not valid YAML ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("profiles"), dict) or not document["profiles"]:
        raise ProfileError(f"{path.name}: expected a mapping 'profiles' of at least one profile")
    profiles: dict[str, dict[str, Any]] = {}
    for name, profile in document["profiles"].items():
        errors = sorted(Draft202012Validator(schema).iter_errors(profile), key=lambda e: list(e.absolute_path))
        if errors:
            field = ".".join(str(p) for p in errors[0].absolute_path) or "(profile)"
            raise ProfileError(f"{path.name}, profile {name!r}, field {field}: {errors[0].message}")
        if kind == "security":
            for probe in profile["probes"]:
                problem = probe_problem(probe)
                if problem:
                    raise ProfileError(f"{path.name}, profile {name!r}: {problem}")
        profiles[str(name)] = profile
    return profiles


@cache
def _cached(path: str, stamp: tuple[float, int], kind: str) -> dict[str, dict[str, Any]]:
    return _load(Path(path), SECURITY_SCHEMA if kind == "security" else BIAS_SCHEMA, kind)


def profiles(kind: str) -> dict[str, dict[str, Any]]:
    """The ``security`` or ``bias`` profiles on disk now (re-read when the file changes)."""
    from django.conf import settings

    path = Path(settings.POLICY_DIR) / "audits" / f"{kind}.yaml"
    stat = path.stat() if path.is_file() else None
    return _cached(str(path), (stat.st_mtime, stat.st_size) if stat else (0.0, 0), kind)


def profile(kind: str, name: str) -> dict[str, Any]:
    """One profile, or a 400 naming the known ones."""
    from common.errors import DomainError

    known = profiles(kind)
    if name not in known:
        raise DomainError(
            "invalid_input", f"profile: no {kind} profile {name!r}; known: {', '.join(sorted(known))}",
            fields={"profile": [f"unknown: {name}"]},
        )  # fmt: skip
    return known[name]
