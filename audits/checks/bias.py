"""Bias evaluation of an LLM used as a binary classifier, with fairlearn.

The model's free-text answers are mapped to labels (:func:`map_answers`), scored per group of a
sensitive feature (:func:`evaluate`), held against a policy's bounds (:func:`check_bounds`) and
drawn (:func:`chart_png`). Pure module, no Django: fairlearn, scikit-learn and the chart module
are imported only when a metric is computed or a chart drawn, so importing this module costs nothing.
"""

from __future__ import annotations

import importlib
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

# Quotes and markdown emphasis that chat models put around a one-word answer ("**Yes**").
_ANSWER_WRAPPING = " \t\r\n\"'`*"
# A bound on a value that floating point put a hair above it (0.5000000000000001) still holds.
_BOUND_TOLERANCE = 1e-9


@dataclass(frozen=True)
class LabelMapping:
    """Answer patterns and the label each stands for, e.g. ``{"yes": "1", "no": "0"}``.

    A pattern matches when the stripped answer starts with it, case-insensitively, as whole words:
    ``"no"`` matches ``"No."`` and ``"no, because"`` but not ``"nothing"``; whitespace inside a
    pattern matches any run of whitespace. Quotes and ``*`` around the answer are ignored. When
    several patterns match, the longest wins, so ``"not toxic"`` beats ``"not"``.
    """

    labels: dict[str, str]

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("labels: the mapping needs at least one answer pattern")
        seen: dict[str, str] = {}
        for pattern, label in self.labels.items():
            if not isinstance(pattern, str) or not pattern.strip():
                raise ValueError(f"labels: answer pattern {pattern!r} is empty")
            if not isinstance(label, str) or not label:
                raise ValueError(f"labels: the label for {pattern!r} must be a non-empty string, not {label!r}")
            key = " ".join(pattern.split()).casefold()
            if key in seen:
                raise ValueError(f"labels: answer patterns {seen[key]!r} and {pattern!r} are the same pattern")
            seen[key] = pattern

    def matchers(self) -> list[tuple[re.Pattern[str], str]]:
        """The compiled patterns, longest first, with their labels."""
        compiled = []
        for pattern, label in sorted(self.labels.items(), key=lambda item: -len(" ".join(item[0].split()))):
            words = pattern.split()
            regex = r"\s+".join(re.escape(word) for word in words)
            if re.match(r"\w", words[-1][-1]):
                regex += r"(?!\w)"
            compiled.append((re.compile(regex, re.IGNORECASE), label))
        return compiled


def map_answers(answers: list[str], mapping: LabelMapping) -> tuple[list[str | None], list[int]]:
    """The label of each answer (``None`` where no pattern matches) and the indexes of those."""
    matchers = mapping.matchers()
    labels: list[str | None] = []
    unparsed: list[int] = []
    for index, answer in enumerate(answers):
        text = answer.strip(_ANSWER_WRAPPING)
        label = next((label for regex, label in matchers if regex.match(text)), None)
        labels.append(label)
        if label is None:
            unparsed.append(index)
    return labels, unparsed


@dataclass(frozen=True)
class Metric:
    """A metric a policy may name: a fairlearn or scikit-learn function, imported when called.

    Called with binary arrays (1 is the positive label), as :class:`fairlearn.metrics.MetricFrame`
    calls it.
    """

    module: str
    function: str
    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self, y_true: Any, y_pred: Any) -> float:
        function = getattr(importlib.import_module(self.module), self.function)
        return float(function(y_true, y_pred, **dict(self.options)))


_FAIRLEARN = "fairlearn.metrics"
_SKLEARN = "sklearn.metrics"
# zero_division=0.0: a group the model never selects has precision 0, said without a warning.
_NO_WARNING = (("zero_division", 0.0),)

METRICS: dict[str, Metric] = {
    "accuracy": Metric(_SKLEARN, "accuracy_score"),
    "selection_rate": Metric(_FAIRLEARN, "selection_rate"),
    "true_positive_rate": Metric(_FAIRLEARN, "true_positive_rate"),
    "false_positive_rate": Metric(_FAIRLEARN, "false_positive_rate"),
    "true_negative_rate": Metric(_FAIRLEARN, "true_negative_rate"),
    "false_negative_rate": Metric(_FAIRLEARN, "false_negative_rate"),
    "precision": Metric(_SKLEARN, "precision_score", _NO_WARNING),
    "recall": Metric(_SKLEARN, "recall_score", _NO_WARNING),
    "f1": Metric(_SKLEARN, "f1_score", _NO_WARNING),
}


@dataclass(frozen=True)
class BiasResult:
    """What :func:`evaluate` found.

    ``groups`` holds every group of the input, sorted, including a group whose every answer was
    unparseable: its count is 0 and its ``by_group`` values are ``None``; the differences are taken
    over the groups that have records.
    """

    sensitive_feature: str
    groups: list[str]
    counts: dict[str, int]
    by_group: dict[str, dict[str, float | None]]  # metric -> group -> value
    overall: dict[str, float]
    demographic_parity_difference: float
    equalized_odds_difference: float
    differences: dict[str, float]  # metric -> largest difference between two groups
    unparsed: int
    evaluated: int


def evaluate(
    *,
    y_true: list[str],
    y_pred: list[str | None],
    sensitive: list[str],
    sensitive_feature: str,
    positive_label: str,
    metrics: list[str],
) -> BiasResult:
    """Score the predictions per group of ``sensitive`` with fairlearn.

    Rows whose prediction is ``None`` (unparseable answers) are dropped and counted in
    ``unparsed``. Labels become binary: ``positive_label`` is 1, every other label 0.
    Demographic parity and equalized odds differences are fairlearn's own functions (between
    groups; equalized odds takes the worse of the true and false positive rate differences).

    Raises ``ValueError`` when the three lists differ in length, a metric name is unknown,
    ``positive_label`` occurs in neither the truth nor the predictions (most likely a typo), or
    no row is left to evaluate.
    """
    if not len(y_true) == len(y_pred) == len(sensitive):
        raise ValueError(
            "y_true, y_pred and sensitive must be the same length, not "
            f"{len(y_true)}, {len(y_pred)} and {len(sensitive)}"
        )
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
    if not sensitive_feature:
        raise ValueError("sensitive_feature: must name the feature")
    kept = [index for index, label in enumerate(y_pred) if label is not None]
    unparsed = len(y_pred) - len(kept)
    if not kept:
        raise ValueError(f"nothing left to evaluate: {unparsed} of {len(y_pred)} predictions were unparseable")
    if positive_label not in y_true and positive_label not in y_pred:
        raise ValueError(f"positive_label: {positive_label!r} occurs in neither y_true nor y_pred")

    from fairlearn.metrics import MetricFrame, demographic_parity_difference, equalized_odds_difference

    truth = [int(y_true[index] == positive_label) for index in kept]
    predicted = [int(y_pred[index] == positive_label) for index in kept]
    features = [sensitive[index] for index in kept]
    groups = sorted(set(sensitive))
    present = Counter(features)
    names = list(dict.fromkeys(metrics))

    by_group: dict[str, dict[str, float | None]] = {}
    overall: dict[str, float] = {}
    differences: dict[str, float] = {}
    if names:
        frame = MetricFrame(
            metrics={name: METRICS[name] for name in names},
            y_true=truth,
            y_pred=predicted,
            sensitive_features=features,
        )
        table, totals, gaps = frame.by_group, frame.overall, frame.difference()
        for name in names:
            by_group[name] = {group: float(table[name][group]) if present[group] else None for group in groups}
            overall[name] = float(totals[name])
            differences[name] = float(gaps[name])

    return BiasResult(
        sensitive_feature=sensitive_feature,
        groups=groups,
        counts={group: present[group] for group in groups},
        by_group=by_group,
        overall=overall,
        demographic_parity_difference=float(
            demographic_parity_difference(truth, predicted, sensitive_features=features)
        ),
        equalized_odds_difference=float(equalized_odds_difference(truth, predicted, sensitive_features=features)),
        differences=differences,
        unparsed=unparsed,
        evaluated=len(kept),
    )


def check_bounds(result: BiasResult, bounds: dict[str, float]) -> list[str]:
    """One message per bound the result breaks, in the order of ``bounds``; empty when all hold.

    A bound names ``demographic_parity_difference``, ``equalized_odds_difference`` or
    ``<metric>_difference`` for a metric the evaluation computed. A value that is not a number
    breaks its bound. Raises ``ValueError`` for an unknown name or a bound that is negative or
    not a number, before judging anything.
    """
    values: dict[str, float] = {
        "demographic_parity_difference": result.demographic_parity_difference,
        "equalized_odds_difference": result.equalized_odds_difference,
    }
    values.update({f"{metric}_difference": value for metric, value in result.differences.items()})
    for name, bound in sorted(bounds.items()):
        if name not in values:
            metric = name.removesuffix("_difference")
            if name.endswith("_difference") and metric in METRICS:
                raise ValueError(f"bounds: {name!r} needs the metric {metric!r}, which this evaluation did not compute")
            raise ValueError(f"bounds: unknown bound {name!r}; known: {', '.join(values)}")
        if not isinstance(bound, int | float) or math.isnan(bound) or bound < 0:
            raise ValueError(f"bounds: {name} must be a number of at least 0, not {bound!r}")
    messages = []
    # By name: the bounds may come back from a JSON column, whose key order PostgreSQL's jsonb
    # does not keep, and the reasons must read the same on every database.
    for name, bound in sorted(bounds.items()):
        value = values[name]
        if math.isnan(value):
            messages.append(f"{name} is not a number, so the bound {bound:.3f} cannot be shown to hold")
        elif value > bound + _BOUND_TOLERANCE:
            shown, limit = _distinct(value, bound)
            messages.append(f"{name} {shown} is above the bound {limit}")
    return messages


def _distinct(value: float, bound: float) -> tuple[str, str]:
    """Both numbers with three decimals, or with more where three would print them equal."""
    for digits in (3, 6, 12):
        shown, limit = f"{value:.{digits}f}", f"{bound:.{digits}f}"
        if shown != limit:
            return shown, limit
    return repr(value), repr(bound)


def chart_png(result: BiasResult, metric: str) -> bytes:
    """A bar chart of ``metric`` for each group, the overall value as a dashed line, as PNG bytes
    (drawn by ``common.charts``: the same result gives the same bytes).

    Groups without records are shown as "no records", a value the metric leaves undefined (NaN)
    as "undefined". Raises ``ValueError`` for a metric the evaluation did not compute.
    """
    if metric not in result.by_group:
        raise ValueError(f"metric: {metric!r} was not computed; computed: {', '.join(result.by_group) or 'none'}")
    from common import charts

    values = [result.by_group[metric][group] for group in result.groups]
    shown = [value if value is not None and math.isfinite(value) else None for value in values]
    notes = [
        "no records" if value is None else "undefined" if drawn is None else f"{value:.3f}\nn={result.counts[group]}"
        for value, drawn, group in zip(values, shown, result.groups, strict=True)
    ]
    overall = result.overall[metric]
    chart = charts.Chart(
        "bar", result.groups, {metric: shown}, title=f"{metric} by {result.sensitive_feature}",
        x_label=result.sensitive_feature, y_label=metric, notes=notes,
        reference=("overall", overall) if math.isfinite(overall) else None,
        y_max=max([1.0, *(v for v in shown if v is not None)]) * 1.2,
        width=max(320, 90 * len(result.groups) + 100), height=300, font_size=10,
    )  # fmt: skip
    return charts.png(chart)


def result_to_dict(result: BiasResult) -> dict[str, Any]:
    """``result`` as JSON-ready data: floats rounded to 6 places, ``None`` for a missing value."""
    rounded = _round(asdict(result))
    assert isinstance(rounded, dict)
    return rounded


def _round(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _round(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_round(item) for item in value]
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value
