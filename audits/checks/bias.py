"""Bias evaluation of an LLM used as a binary classifier, with fairlearn.

The model's free-text answers are mapped to labels (:func:`map_answers`), scored per group of a
sensitive feature (:func:`evaluate`), held against a policy's bounds (:func:`check_bounds`) and
drawn (:func:`chart_png`). Pure module, no Django: fairlearn, scikit-learn, numpy and the chart
module are imported only when a metric is computed or a chart drawn, so importing this module
costs nothing.

Uncertainty. Every number :func:`evaluate` reports (each metric by group and overall, each
metric's largest difference between groups, demographic parity and equalized odds differences)
comes with a confidence interval (95% unless asked otherwise) from a seeded bootstrap over the
evaluated records, resampled within groups, so each resample keeps every group's size. The
metrics depend on a group's records only through its confusion counts (true and false positives
and negatives), so a group's resample is drawn as a multinomial of its size over its four
observed cell shares: the same distribution as drawing its records with replacement, at a cost
independent of the number of records. Same records, resamples and seed: same interval, on any
machine with the same numpy. A cell a group never showed is never drawn: a group the model
never got wrong shows no uncertainty in its error rates, which a small group makes likely (hence
the minimum group size below). The intervals are percentile intervals, but for one kind of number.
A difference between groups is a largest-minus-smallest, never negative, so the percentile
interval of its resamples leans upward when the groups truly differ little: identical groups would
get an interval that excludes 0. So its upper end is that percentile (the largest gap between any
two groups the data admit, conservative for the bounds) and its lower end is the lower
percentile of the signed gap between the two groups furthest apart in the data (negative where
resamples reverse them), raised to 0: identical groups get an interval from 0.

Verdict rules (applied by the service, in this order):

- A group with fewer evaluated records than the profile's ``min_group_size`` (default
  :data:`DEFAULT_MIN_GROUP_SIZE`) is "too small to conclude" (:func:`too_small_groups`): the
  evaluation does not pass, whatever its numbers; its numbers are still reported.
- A bound holds when the point value (fairlearn's own number) is at most the bound, the rule
  fairlearn's users and the earlier runs of this service apply (``bound_rule: value``, the
  default); the interval is reported beside it and named in the reason when it fails. A profile
  may ask for the stricter ``bound_rule: ci_high``: the bound holds only when the interval's upper
  end is at most the bound, so a pass means the data show the difference is under it. The default
  is not the stricter rule because, with the group sizes the minimum admits, an upper end under
  0.1 needs hundreds of records a group, and a rule no evaluation set can meet would be waived
  rather than read.
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
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
DEFAULT_MIN_GROUP_SIZE = 30
BOUND_RULES = ("value", "ci_high")


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


Interval = tuple[float, float]


@dataclass(frozen=True)
class BiasResult:
    """What :func:`evaluate` found.

    ``groups`` holds every group of the input, sorted, including a group whose every answer was
    unparseable: its count is 0 and its ``by_group`` values are ``None``; the differences are taken
    over the groups that have records. ``intervals`` holds the confidence interval of each
    difference, by the name a bound gives it (``demographic_parity_difference``,
    ``equalized_odds_difference``, ``<metric>_difference``); ``by_group_intervals`` and
    ``overall_intervals`` those of each metric by group (``None`` for a group without records) and
    overall. ``small_groups`` are the groups with fewer records than ``min_group_size``.
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
    intervals: dict[str, Interval]
    by_group_intervals: dict[str, dict[str, Interval | None]]
    overall_intervals: dict[str, Interval]
    level: float
    resamples: int
    seed: int
    min_group_size: int
    small_groups: list[str]

    def differences_by_bound(self) -> dict[str, float]:
        """Each difference by the name a bound gives it."""
        values = {
            "demographic_parity_difference": self.demographic_parity_difference,
            "equalized_odds_difference": self.equalized_odds_difference,
        }
        values.update({f"{metric}_difference": value for metric, value in self.differences.items()})
        return values


def evaluate(
    *,
    y_true: list[str],
    y_pred: list[str | None],
    sensitive: list[str],
    sensitive_feature: str,
    positive_label: str,
    metrics: list[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
) -> BiasResult:
    """Score the predictions per group of ``sensitive`` with fairlearn, with a ``level`` confidence
    interval for every number from ``resamples`` bootstrap resamples seeded with ``seed`` (see the
    module's docstring), and the groups smaller than ``min_group_size`` named.

    Rows whose prediction is ``None`` (unparseable answers) are dropped and counted in
    ``unparsed``. Labels become binary: ``positive_label`` is 1, every other label 0.
    Demographic parity and equalized odds differences are fairlearn's own functions (between
    groups; equalized odds takes the worse of the true and false positive rate differences).

    Raises ``ValueError`` when the three lists differ in length, a metric name is unknown,
    ``positive_label`` occurs in neither the truth nor the predictions (most likely a typo), no
    row is left to evaluate, or a bootstrap setting is out of range.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or not 1 <= resamples <= 100_000:
        raise ValueError(f"resamples: must be a whole number from 1 to 100000, not {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: must be a whole number of at least 0, not {seed!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: must be between 0 and 1, not {level!r}")
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 1:
        raise ValueError(f"min_group_size: must be a whole number of at least 1, not {min_group_size!r}")
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

    intervals, by_group_intervals, overall_intervals = _bootstrap(
        truth, predicted, features, names, resamples=resamples, seed=seed, level=level
    )
    counts = {group: present[group] for group in groups}
    return BiasResult(
        sensitive_feature=sensitive_feature,
        groups=groups,
        counts=counts,
        by_group=by_group,
        overall=overall,
        demographic_parity_difference=float(
            demographic_parity_difference(truth, predicted, sensitive_features=features)
        ),
        equalized_odds_difference=float(equalized_odds_difference(truth, predicted, sensitive_features=features)),
        differences=differences,
        unparsed=unparsed,
        evaluated=len(kept),
        intervals=intervals,
        by_group_intervals={
            name: {group: by_group_intervals[name].get(group) for group in groups} for name in by_group_intervals
        },
        overall_intervals=overall_intervals,
        level=level,
        resamples=resamples,
        seed=seed,
        min_group_size=min_group_size,
        small_groups=[group for group in groups if counts[group] < min_group_size],
    )


def _rate(numerator: Any, denominator: Any) -> Any:
    """numerator / denominator, 0 where the denominator is 0: what fairlearn and scikit-learn
    (``zero_division=0``) answer for a rate a group leaves undefined."""
    import numpy as np

    return np.divide(numerator, denominator, out=np.zeros(np.shape(numerator)), where=denominator != 0)


# Each metric of METRICS from a group's confusion counts (true/false positives/negatives).
_FROM_CELLS: dict[str, Any] = {
    "accuracy": lambda tp, fp, fn, tn: _rate(tp + tn, tp + fp + fn + tn),
    "selection_rate": lambda tp, fp, fn, tn: _rate(tp + fp, tp + fp + fn + tn),
    "true_positive_rate": lambda tp, fp, fn, tn: _rate(tp, tp + fn),
    "false_positive_rate": lambda tp, fp, fn, tn: _rate(fp, fp + tn),
    "true_negative_rate": lambda tp, fp, fn, tn: _rate(tn, tn + fp),
    "false_negative_rate": lambda tp, fp, fn, tn: _rate(fn, fn + tp),
    "precision": lambda tp, fp, fn, tn: _rate(tp, tp + fp),
    "recall": lambda tp, fp, fn, tn: _rate(tp, tp + fn),
    "f1": lambda tp, fp, fn, tn: _rate(2 * tp, 2 * tp + fp + fn),
}


def cell_statistics(cells: Any, names: list[str]) -> dict[str, Any]:
    """Every number :func:`evaluate` reports, from confusion counts ``cells`` of shape (..., groups,
    4) (true positives, false positives, false negatives, true negatives per group; groups with
    records only): ``<metric>`` (..., groups), ``<metric>:overall`` (...), and each difference
    by its bound name (...). The bootstrap's arithmetic, checked against fairlearn's own numbers."""
    import numpy as np

    tp, fp, fn, tn = (cells[..., index] for index in range(4))
    totals = cells.sum(axis=-2)
    out: dict[str, Any] = {}
    for name in {*names, "selection_rate", "true_positive_rate", "false_positive_rate"}:
        out[name] = _FROM_CELLS[name](tp, fp, fn, tn)
        out[f"{name}:overall"] = _FROM_CELLS[name](*(totals[..., index] for index in range(4)))

    def spread(values: Any) -> Any:
        return values.max(axis=-1) - values.min(axis=-1)

    for name in ("true_positive_rate", "false_positive_rate"):
        out[f"{name}:spread"] = spread(out[name])
    out["demographic_parity_difference"] = spread(out["selection_rate"])
    out["equalized_odds_difference"] = np.maximum(out["true_positive_rate:spread"], out["false_positive_rate:spread"])
    for name in names:
        out[f"{name}_difference"] = spread(out[name])
    return out


def confusion_cells(truth: list[int], predicted: list[int], features: list[str]) -> tuple[list[str], Any]:
    """The groups with records, sorted, and their confusion counts, shape (groups, 4)."""
    import numpy as np

    present = sorted(set(features))
    index = {group: number for number, group in enumerate(present)}
    cells = np.zeros((len(present), 4), dtype=np.int64)
    for actual, guess, group in zip(truth, predicted, features, strict=True):
        cell = 0 if actual and guess else 1 if guess else 2 if actual else 3
        cells[index[group], cell] += 1
    return present, cells


def _bootstrap(
    truth: list[int],
    predicted: list[int],
    features: list[str],
    names: list[str],
    *,
    resamples: int,
    seed: int,
    level: float,
) -> tuple[dict[str, Interval], dict[str, dict[str, Interval]], dict[str, Interval]]:
    """The intervals of every reported number over ``resamples`` resamples within groups (see the
    module's docstring): percentile intervals, but for a difference between groups the lower end
    is that of the signed gap between the two groups furthest apart in the data, at least 0."""
    import numpy as np

    present, cells = confusion_cells(truth, predicted, features)
    rng = np.random.default_rng(seed)
    # (resamples, groups, 4): each group redrawn at its own size, groups in sorted order, so the
    # same records and seed give the same draws.
    drawn = np.stack(
        [rng.multinomial(int(row.sum()), row / row.sum(), size=resamples) for row in cells], axis=1
    ).astype(np.float64)
    stats = cell_statistics(drawn, names)
    tail = (1 - level) / 2 * 100

    def interval(values: Any) -> Interval:
        low, high = np.percentile(values, [tail, 100 - tail], axis=0)
        return float(low), float(high)

    point = cell_statistics(cells.astype(np.float64), names)

    def signed_gap(metric: str) -> Any:
        """Each resample's gap between the groups with the highest and the lowest ``metric`` in
        the data (the first in sorted order on a tie): negative where a resample reverses them."""
        high, low = int(np.argmax(point[metric])), int(np.argmin(point[metric]))
        return stats[metric][:, high] - stats[metric][:, low]

    def difference_interval(name: str, metric: str) -> Interval:
        low = max(0.0, float(np.percentile(signed_gap(metric), tail)))
        return low, interval(stats[name])[1]

    # Equalized odds: the gap of whichever rate differs more in the data.
    rates = ("true_positive_rate", "false_positive_rate")
    odds = max(rates, key=lambda rate: float(point[f"{rate}:spread"]))
    intervals = {
        "demographic_parity_difference": difference_interval("demographic_parity_difference", "selection_rate"),
        "equalized_odds_difference": difference_interval("equalized_odds_difference", odds),
        **{f"{n}_difference": difference_interval(f"{n}_difference", n) for n in names},
    }
    by_group = {
        name: {group: interval(stats[name][:, number]) for number, group in enumerate(present)} for name in names
    }
    overall = {name: interval(stats[f"{name}:overall"]) for name in names}
    return intervals, by_group, overall


def too_small_groups(result: BiasResult) -> list[str]:
    """One message per group with fewer evaluated records than the result's ``min_group_size``:
    its numbers are reported, but too few to conclude anything from, so the evaluation may not
    pass on them."""
    return [
        f"group {group!r} of {result.sensitive_feature} has {result.counts[group]} evaluated record"
        f"{'' if result.counts[group] == 1 else 's'}, fewer than the minimum of {result.min_group_size}: "
        "too small to conclude"
        for group in result.small_groups
    ]


def check_bounds(result: BiasResult, bounds: dict[str, float], rule: str = "value") -> list[str]:
    """One message per bound the result breaks, in the order of the bounds' names; empty when all
    hold. Under ``rule`` ``value`` a bound holds when the point value is at most it; under
    ``ci_high`` only when the confidence interval's upper end is too (see the module's docstring).
    Each message shows the interval.

    A bound names ``demographic_parity_difference``, ``equalized_odds_difference`` or
    ``<metric>_difference`` for a metric the evaluation computed. A value that is not a number
    breaks its bound. Raises ``ValueError`` for an unknown name or rule, or a bound that is
    negative or not a number, before judging anything.
    """
    values = result.differences_by_bound()
    if rule not in BOUND_RULES:
        raise ValueError(f"bound_rule: must be one of {', '.join(BOUND_RULES)}, not {rule!r}")
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
        low, high = result.intervals.get(name, (math.nan, math.nan))
        ci = f"{result.level:.0%} CI {low:.3f} to {high:.3f}"
        if math.isnan(value):
            messages.append(f"{name} is not a number, so the bound {bound:.3f} cannot be shown to hold")
        elif value > bound + _BOUND_TOLERANCE:
            shown, limit = _distinct(value, bound)
            messages.append(f"{name} {shown} is above the bound {limit} ({ci})")
        elif rule == "ci_high" and not high <= bound + _BOUND_TOLERANCE:
            shown, limit = _distinct(high, bound)
            messages.append(
                f"{name} {value:.3f} is within the bound {limit}, but the upper end of its {ci} is {shown}: "
                "the bound is not shown to hold (bound_rule ci_high)"
            )
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
    """``result`` as JSON-ready data: floats rounded to 6 places, ``None`` for a missing value.

    The keys of earlier runs stay where they were (``groups``, ``counts``, ``by_group``,
    ``overall``, ``demographic_parity_difference``, ``equalized_odds_difference``,
    ``differences``, ``unparsed``, ``evaluated``); added beside them:

    - ``metrics``: each difference a bound may name, ``{name: {value, ci_low, ci_high, level,
      resamples, seed}}``;
    - ``by_group_ci``: ``{metric: {group: {ci_low, ci_high} or None}}``, ``overall_ci``:
      ``{metric: {ci_low, ci_high}}``;
    - ``group_sizes``: ``{group: {records, too_small}}``, ``min_group_size``, ``small_groups``;
    - ``bootstrap``: ``{method, resamples, seed, level}``.
    """
    plain = asdict(result)
    for key in ("intervals", "by_group_intervals", "overall_intervals", "level", "resamples", "seed"):
        plain.pop(key)
    run = {"level": result.level, "resamples": result.resamples, "seed": result.seed}

    def ends(interval: Interval | None) -> dict[str, float] | None:
        return None if interval is None else {"ci_low": interval[0], "ci_high": interval[1]}

    plain["metrics"] = {
        name: {"value": value, **(ends(result.intervals.get(name)) or {"ci_low": None, "ci_high": None}), **run}
        for name, value in result.differences_by_bound().items()
    }
    plain["by_group_ci"] = {
        name: {group: ends(interval) for group, interval in groups.items()}
        for name, groups in result.by_group_intervals.items()
    }
    plain["overall_ci"] = {name: ends(interval) for name, interval in result.overall_intervals.items()}
    plain["group_sizes"] = {
        group: {"records": result.counts[group], "too_small": group in result.small_groups} for group in result.groups
    }
    plain["bootstrap"] = {"method": "percentile, records resampled within groups", **run}
    rounded = _round(plain)
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
