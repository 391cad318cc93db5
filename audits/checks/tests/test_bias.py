"""Bias evaluation: our numbers against fairlearn's own, answer parsing, bounds, charts, and the
tiny GPT-2 answering real prompts end to end. No database."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics as skm
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from PIL import Image

from audits.checks.answers import generate_answers, render_prompts
from audits.checks.bias import (
    METRICS,
    BiasResult,
    LabelMapping,
    cell_statistics,
    chart_png,
    check_bounds,
    confusion_cells,
    evaluate,
    map_answers,
    result_to_dict,
    too_small_groups,
)
from registry.tiny_model import build_tiny_gpt2

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

ROOT = Path(__file__).resolve().parents[3]
EXACT = 1e-12
YES_NO = LabelMapping({"yes": "1", "no": "0"})
# fairlearn and scikit-learn called directly, as a reviewer would check our numbers by hand.
DIRECT = {
    "selection_rate": selection_rate,
    "accuracy": skm.accuracy_score,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "precision": partial(skm.precision_score, zero_division=0.0),
}
NAMES = list(DIRECT)


def _disparate(seed: int = 7) -> tuple[list[str], list[str], list[str]]:
    """Truth, predictions and groups: the model says yes to 80% of group A and 30% of group B."""
    rng = np.random.default_rng(seed)
    groups = ["A"] * 300 + ["B"] * 300
    truth = [str(int(rng.random() < 0.5)) for _ in groups]
    predicted = [str(int(rng.random() < (0.8 if group == "A" else 0.3))) for group in groups]
    return truth, predicted, groups


def _binary(labels: list[str]) -> list[int]:
    return [int(label == "1") for label in labels]


def _assert_matches_fairlearn(result: BiasResult, truth: list[str], predicted: list[str], groups: list[str]) -> None:
    y_true, y_pred = _binary(truth), _binary(predicted)
    frame = MetricFrame(metrics=DIRECT, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    for name in NAMES:
        for group in sorted(set(groups)):
            assert result.by_group[name][group] == pytest.approx(frame.by_group[name][group], abs=EXACT, rel=0)
        assert result.overall[name] == pytest.approx(frame.overall[name], abs=EXACT, rel=0)
        assert result.differences[name] == pytest.approx(frame.difference()[name], abs=EXACT, rel=0)
    expected_dp = demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
    expected_eo = equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
    assert result.demographic_parity_difference == pytest.approx(expected_dp, abs=EXACT, rel=0)
    assert result.equalized_odds_difference == pytest.approx(expected_eo, abs=EXACT, rel=0)


def test_evaluate_reports_fairlearns_numbers_and_the_known_disparity() -> None:
    truth, predicted, groups = _disparate()

    result = evaluate(
        y_true=truth, y_pred=list(predicted), sensitive=groups, sensitive_feature="group", positive_label="1",
        metrics=NAMES,
    )  # fmt: skip

    _assert_matches_fairlearn(result, truth, predicted, groups)
    assert result.groups == ["A", "B"]
    assert result.counts == {"A": 300, "B": 300}
    assert (result.unparsed, result.evaluated) == (0, 600)
    assert result.by_group["selection_rate"]["A"] == pytest.approx(0.8, abs=0.06)
    assert result.by_group["selection_rate"]["B"] == pytest.approx(0.3, abs=0.06)
    assert result.demographic_parity_difference == pytest.approx(0.5, abs=0.1)


def test_check_bounds_names_the_broken_bound_and_its_numbers() -> None:
    truth, predicted, groups = _disparate()
    result = evaluate(
        y_true=truth, y_pred=list(predicted), sensitive=groups, sensitive_feature="group", positive_label="1",
        metrics=NAMES,
    )  # fmt: skip

    messages = check_bounds(result, {"demographic_parity_difference": 0.1})

    low, high = result.intervals["demographic_parity_difference"]
    assert messages == [
        f"demographic_parity_difference {result.demographic_parity_difference:.3f} is above the bound 0.100 "
        f"(95% CI {low:.3f} to {high:.3f})"
    ]
    loose = {"demographic_parity_difference": 1.0, "equalized_odds_difference": 1.0, "accuracy_difference": 1.0}
    assert check_bounds(result, loose) == []
    assert check_bounds(result, {"selection_rate_difference": 0.1})[0].startswith("selection_rate_difference 0.")


def test_check_bounds_shows_more_digits_rather_than_two_equal_numbers() -> None:
    result = evaluate(
        y_true=["1", "0", "1", "0"], y_pred=["1", "0", "1", "1"], sensitive=["A", "A", "B", "B"],
        sensitive_feature="group", positive_label="1", metrics=[],
    )  # fmt: skip
    assert result.demographic_parity_difference == 0.5

    assert check_bounds(result, {"demographic_parity_difference": 0.5}) == []
    [message] = check_bounds(result, {"demographic_parity_difference": 0.4999})
    assert message.startswith("demographic_parity_difference 0.500000 is above the bound 0.499900 (95% CI ")


def test_the_bootstrap_arithmetic_gives_fairlearns_numbers() -> None:
    """The bootstrap computes every number from confusion counts, not with fairlearn (1,000 times
    fairlearn would cost seconds): on the records themselves it must give fairlearn's numbers,
    including groups whose rates are undefined (no positives, nothing selected)."""
    rng = np.random.default_rng(3)
    groups = ["A"] * 40 + ["B"] * 25 + ["C"] * 6 + ["D"] * 5
    truth = [str(int(rng.random() < 0.5)) if g in "AB" else "0" if g == "C" else "1" for g in groups]
    predicted = [str(int(rng.random() < 0.6)) if g != "D" else "0" for g in groups]
    names = list(METRICS)
    result = evaluate(
        y_true=truth, y_pred=list(predicted), sensitive=groups, sensitive_feature="g", positive_label="1", metrics=names
    )
    present, cells = confusion_cells(_binary(truth), _binary(predicted), groups)

    stats = cell_statistics(cells, names)

    assert present == result.groups
    for name in names:
        for number, group in enumerate(present):
            assert stats[name][number] == pytest.approx(result.by_group[name][group], abs=EXACT), (name, group)
        assert stats[f"{name}:overall"] == pytest.approx(result.overall[name], abs=EXACT), name
    for name, value in result.differences_by_bound().items():
        assert stats[name] == pytest.approx(value, abs=EXACT), name


def test_intervals_are_seeded_deterministic_and_as_wide_as_the_data_say() -> None:
    truth, predicted, groups = _disparate()
    arguments = {"y_true": truth, "y_pred": list(predicted), "sensitive": groups, "sensitive_feature": "group",
                 "positive_label": "1", "metrics": NAMES}  # fmt: skip

    result = evaluate(**arguments, resamples=2000, seed=11)

    assert result_to_dict(evaluate(**arguments, resamples=2000, seed=11)) == result_to_dict(result)
    assert evaluate(**arguments, resamples=2000, seed=12).intervals != result.intervals
    low, high = result.intervals["demographic_parity_difference"]
    value = result.demographic_parity_difference
    assert low < value < high
    # Two independent proportions of 300: the half-width is 1.96 standard errors of their difference.
    rates = result.by_group["selection_rate"]
    error = math.sqrt(sum(rate * (1 - rate) / 300 for rate in rates.values()))  # type: ignore[operator]
    assert (high - low) / 2 == pytest.approx(1.96 * error, rel=0.15)
    for group, (g_low, g_high) in result.by_group_intervals["selection_rate"].items():  # type: ignore[misc]
        assert g_low < rates[group] < g_high  # type: ignore[operator]
    o_low, o_high = result.overall_intervals["accuracy"]
    assert o_low < result.overall["accuracy"] < o_high
    assert set(result.intervals) == {"demographic_parity_difference", "equalized_odds_difference",
                                     *(f"{name}_difference" for name in NAMES)}  # fmt: skip


def test_identical_groups_give_an_interval_from_zero() -> None:
    rng = np.random.default_rng(5)
    truth = [str(int(rng.random() < 0.5)) for _ in range(100)]
    predicted = [str(int(rng.random() < 0.5)) for _ in range(100)]

    result = evaluate(
        y_true=truth * 2, y_pred=predicted * 2, sensitive=["A"] * 100 + ["B"] * 100, sensitive_feature="group",
        positive_label="1", metrics=NAMES,
    )  # fmt: skip

    assert result.demographic_parity_difference == 0 and result.equalized_odds_difference == 0
    for name, (low, high) in result.intervals.items():
        assert low == 0 < high < 0.3, name  # contains 0, and says how far apart such groups may still be


def test_the_bound_rule_and_the_interval() -> None:
    rng = np.random.default_rng(5)
    truth = [str(int(rng.random() < 0.5)) for _ in range(100)]
    predicted = [str(int(rng.random() < 0.5)) for _ in range(100)]
    result = evaluate(
        y_true=truth * 2, y_pred=predicted * 2, sensitive=["A"] * 100 + ["B"] * 100, sensitive_feature="group",
        positive_label="1", metrics=["selection_rate"],
    )  # fmt: skip
    high = result.intervals["demographic_parity_difference"][1]
    assert 0.05 < high < 0.3

    # A point value of 0 holds a bound of 0.05 under the default rule; not under ci_high.
    assert check_bounds(result, {"demographic_parity_difference": 0.05}) == []
    [message] = check_bounds(result, {"demographic_parity_difference": 0.05}, rule="ci_high")
    assert message == (
        f"demographic_parity_difference 0.000 is within the bound 0.050, but the upper end of its 95% CI 0.000 "
        f"to {high:.3f} is {high:.3f}: the bound is not shown to hold (bound_rule ci_high)"
    )
    assert check_bounds(result, {"demographic_parity_difference": high}, rule="ci_high") == []
    with pytest.raises(ValueError, match="bound_rule: must be one of value, ci_high, not 'median'"):
        check_bounds(result, {"demographic_parity_difference": 0.05}, rule="median")


def test_groups_below_the_minimum_are_too_small_to_conclude() -> None:
    truth, predicted, groups = _disparate()
    truth, predicted, groups = [*truth, "1", "0", "1"], [*predicted, "1", "1", None], [*groups, "C", "C", "C"]

    result = evaluate(
        y_true=truth, y_pred=predicted, sensitive=groups, sensitive_feature="group", positive_label="1",
        metrics=NAMES, min_group_size=30,
    )  # fmt: skip

    assert result.small_groups == ["C"] and result.counts["C"] == 2
    assert too_small_groups(result) == [
        "group 'C' of group has 2 evaluated records, fewer than the minimum of 30: too small to conclude"
    ]
    as_dict = result_to_dict(result)
    assert as_dict["group_sizes"] == {
        "A": {"records": 300, "too_small": False}, "B": {"records": 300, "too_small": False},
        "C": {"records": 2, "too_small": True},
    }  # fmt: skip
    assert (as_dict["min_group_size"], as_dict["small_groups"]) == (30, ["C"])
    lowered = evaluate(
        y_true=truth, y_pred=predicted, sensitive=groups, sensitive_feature="group", positive_label="1",
        metrics=NAMES, min_group_size=2,
    )  # fmt: skip
    assert too_small_groups(lowered) == []
    with pytest.raises(ValueError, match="min_group_size: must be a whole number of at least 1, not 0"):
        evaluate(
            y_true=truth, y_pred=predicted, sensitive=groups, sensitive_feature="group", positive_label="1",
            metrics=NAMES, min_group_size=0,
        )  # fmt: skip


def test_result_to_dict_keeps_the_old_keys_and_adds_the_intervals() -> None:
    truth, predicted, groups = _disparate()
    result = evaluate(
        y_true=truth, y_pred=list(predicted), sensitive=groups, sensitive_feature="group", positive_label="1",
        metrics=["accuracy", "selection_rate"], resamples=500, seed=3,
    )  # fmt: skip

    as_dict = json.loads(json.dumps(result_to_dict(result)))

    old = {"sensitive_feature", "groups", "counts", "by_group", "overall", "demographic_parity_difference",
           "equalized_odds_difference", "differences", "unparsed", "evaluated"}  # fmt: skip
    assert old <= set(as_dict)
    assert as_dict["demographic_parity_difference"] == round(result.demographic_parity_difference, 6)
    low, high = result.intervals["demographic_parity_difference"]
    assert as_dict["metrics"]["demographic_parity_difference"] == {
        "value": round(result.demographic_parity_difference, 6), "ci_low": round(low, 6), "ci_high": round(high, 6),
        "level": 0.95, "resamples": 500, "seed": 3,
    }  # fmt: skip
    assert set(as_dict["metrics"]) == {
        "demographic_parity_difference", "equalized_odds_difference", "accuracy_difference",
        "selection_rate_difference",
    }  # fmt: skip
    assert set(as_dict["by_group_ci"]["accuracy"]) == {"A", "B"}
    assert set(as_dict["overall_ci"]) == {"accuracy", "selection_rate"}
    assert as_dict["bootstrap"] == {
        "method": "percentile, records resampled within groups",
        "level": 0.95,
        "resamples": 500,
        "seed": 3,
    }


def test_unparseable_answers_are_counted_and_left_out() -> None:
    truth, predicted, groups = _disparate()
    answers = [" Yes." if label == "1" else "**No**, because" for label in predicted]
    for index in range(0, len(answers), 7):
        answers[index] = "I cannot answer that"
    # Group C answered nothing parseable: it is reported with no records, not a crash.
    truth, groups = [*truth, "1", "0"], [*groups, "C", "C"]
    answers += ["maybe", "nothing to say"]

    labels, unparsed = map_answers(answers, YES_NO)
    result = evaluate(
        y_true=truth, y_pred=labels, sensitive=groups, sensitive_feature="group", positive_label="1", metrics=NAMES
    )

    assert unparsed == [*range(0, 600, 7), 600, 601]
    assert (result.unparsed, result.evaluated) == (len(unparsed), len(answers) - len(unparsed))
    kept = [index for index in range(len(answers)) if index not in set(unparsed)]
    assert [labels[index] for index in kept] == [predicted[index] for index in kept]
    _assert_matches_fairlearn(result, [truth[i] for i in kept], [predicted[i] for i in kept], [groups[i] for i in kept])
    assert result.groups == ["A", "B", "C"]
    assert result.counts["C"] == 0
    assert all(result.by_group[name]["C"] is None for name in NAMES)
    as_dict = json.loads(json.dumps(result_to_dict(result)))
    assert as_dict["by_group"]["accuracy"]["C"] is None
    assert as_dict["unparsed"] == len(unparsed)
    assert as_dict["demographic_parity_difference"] == round(result.demographic_parity_difference, 6)


def test_map_answers_matches_whole_leading_words_case_insensitively() -> None:
    mapping = LabelMapping({"toxic": "1", "not toxic": "0", "no": "0"})
    answers = ["Toxic.", "  NOT   toxic", "not toxicity", "No", "nothing", "'toxic'", "", "the answer is toxic"]

    labels, unparsed = map_answers(answers, mapping)

    assert labels == ["1", "0", None, "0", None, "1", None, None]
    assert unparsed == [2, 4, 6, 7]


def test_label_mapping_refuses_empty_and_duplicate_patterns() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LabelMapping({})
    with pytest.raises(ValueError, match="'  ' is empty"):
        LabelMapping({"  ": "1"})
    with pytest.raises(ValueError, match="'Yes' and 'yes' are the same pattern"):
        LabelMapping({"Yes": "1", "yes": "0"})


def test_evaluate_and_check_bounds_refuse_bad_input_by_name() -> None:
    good = {"y_true": ["1", "0"], "y_pred": ["1", "1"], "sensitive": ["A", "B"], "sensitive_feature": "group"}
    with pytest.raises(ValueError, match="unknown metric 'bogus'"):
        evaluate(**good, positive_label="1", metrics=["accuracy", "bogus"])
    with pytest.raises(ValueError, match="same length, not 2, 1 and 2"):
        evaluate(**{**good, "y_pred": ["1"]}, positive_label="1", metrics=["accuracy"])
    with pytest.raises(ValueError, match="positive_label: 'yes' occurs in neither"):
        evaluate(**good, positive_label="yes", metrics=["accuracy"])
    with pytest.raises(ValueError, match="nothing left to evaluate: 2 of 2"):
        evaluate(**{**good, "y_pred": [None, None]}, positive_label="1", metrics=["accuracy"])

    result = evaluate(**good, positive_label="1", metrics=["accuracy"])
    with pytest.raises(ValueError, match="unknown bound 'fairness'"):
        check_bounds(result, {"fairness": 0.1})
    with pytest.raises(ValueError, match="'precision_difference' needs the metric 'precision'"):
        check_bounds(result, {"precision_difference": 0.1})
    with pytest.raises(ValueError, match="at least 0"):
        check_bounds(result, {"accuracy_difference": -0.1})


def test_metrics_are_only_the_named_fairlearn_and_sklearn_functions() -> None:
    assert {"accuracy", "selection_rate", "true_positive_rate", "false_positive_rate", "precision", "recall"} <= set(
        METRICS
    )
    assert {metric.module for metric in METRICS.values()} == {"fairlearn.metrics", "sklearn.metrics"}


def test_chart_png_draws_a_png_even_with_an_empty_group() -> None:
    truth, predicted, groups = _disparate()
    result = evaluate(
        y_true=[*truth, "1"], y_pred=[*predicted, None], sensitive=[*groups, "C"], sensitive_feature="group",
        positive_label="1", metrics=NAMES,
    )  # fmt: skip

    png = chart_png(result, "selection_rate")

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 5_000
    assert chart_png(result, "selection_rate") == png  # its digest is evidence: same result, same bytes
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (2 * (90 * 3 + 100), 2 * 300)  # three groups, two pixels a point
    with pytest.raises(ValueError, match="'recall' was not computed"):
        chart_png(result, "recall")


def test_render_prompts_fills_fields_and_names_a_missing_one() -> None:
    template = "Review: {text}\nAuthor group {{hidden}}: {group}\nAnswer yes or no:"
    records = [{"text": "great", "group": "A"}, {"text": "bad", "group": "B", "extra": "ignored"}]

    assert render_prompts(template, records) == [
        "Review: great\nAuthor group {hidden}: A\nAnswer yes or no:",
        "Review: bad\nAuthor group {hidden}: B\nAnswer yes or no:",
    ]
    with pytest.raises(ValueError, match=r"field 'group' is missing from record 1 \(counting from 0\)"):
        render_prompts(template, [records[0], {"text": "no group"}])
    with pytest.raises(ValueError, match="format spec"):
        render_prompts("{text:>10}", records)
    with pytest.raises(ValueError, match="names no field"):
        render_prompts("{}", records)
    with pytest.raises(ValueError, match=r"^template:"):
        render_prompts("unbalanced {text", records)


SUBJECTS = ["refund", "order", "ticket", "return", "delivery", "invoice", "password", "account"]
RECORDS = [
    {"text": f"the customer asked about the {subject}", "group": group, "label": label}
    for subject in SUBJECTS
    for group, label in (("A", "1"), ("B", "0"))
]  # 16 records
# The subject comes last: the random model echoes the end of its prompt, so answers differ.
TEMPLATE = "Should the agent answer this? Answer yes or no. {text}"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("bias") / "m")


def test_generate_answers_is_deterministic_and_end_to_end_counts_garbage(tiny_model: Path) -> None:
    prompts = render_prompts(TEMPLATE, RECORDS)

    answers = generate_answers(model_folder=tiny_model, prompts=prompts, max_new_tokens=4, batch_size=8)

    assert len(answers) == len(prompts)
    assert all(isinstance(answer, str) for answer in answers)
    assert generate_answers(model_folder=tiny_model, prompts=prompts, max_new_tokens=4, batch_size=8) == answers
    truth = [record["label"] for record in RECORDS]
    groups = [record["group"] for record in RECORDS]

    # A random 2-layer model does not say yes or no: every answer is counted, then refused clearly.
    labels, unparsed = map_answers(answers, YES_NO)
    assert unparsed == list(range(len(prompts)))
    with pytest.raises(ValueError, match="nothing left to evaluate: 16 of 16"):
        evaluate(
            y_true=truth, y_pred=labels, sensitive=groups, sensitive_feature="group", positive_label="1",
            metrics=["accuracy"],
        )  # fmt: skip

    # Taking the model's first two distinct answers as "yes" and "no" parses some and counts the rest.
    first_words = list(dict.fromkeys(answer.split()[0] for answer in answers if answer.split()))
    assert len(first_words) >= 3, f"the tiny model should answer the subjects differently: {answers}"
    mapping = LabelMapping({first_words[0]: "1", first_words[1]: "0"})
    labels, unparsed = map_answers(answers, mapping)
    result = evaluate(
        y_true=truth, y_pred=labels, sensitive=groups, sensitive_feature="group", positive_label="1",
        metrics=["accuracy", "selection_rate"],
    )  # fmt: skip
    parsed = [
        index for index, answer in enumerate(answers) if answer.split()[:1] in ([first_words[0]], [first_words[1]])
    ]
    assert unparsed == [index for index in range(len(answers)) if index not in parsed]
    assert 0 < result.evaluated == len(parsed) < len(prompts)
    assert result.unparsed == len(prompts) - len(parsed)
    assert sum(result.counts.values()) == result.evaluated


def test_generate_answers_refuses_bad_arguments_before_loading(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^model_folder:"):
        generate_answers(model_folder=tmp_path / "absent", prompts=["hi"])
    with pytest.raises(ValueError, match=r"^device:"):
        generate_answers(model_folder=tiny_model, prompts=["hi"], device="tpu")
    with pytest.raises(ValueError, match=r"^max_new_tokens:"):
        generate_answers(model_folder=tiny_model, prompts=["hi"], max_new_tokens=0)
    with pytest.raises(ValueError, match=r"^prompts: prompt 1 \(counting from 0\) is empty"):
        generate_answers(model_folder=tiny_model, prompts=["hi", ""])
    assert generate_answers(model_folder=tiny_model, prompts=[]) == []


def test_generate_answers_refuses_a_prompt_longer_than_the_context(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match=r"prompt 1 \(counting from 0\) is \d+ tokens long"):
        generate_answers(model_folder=tiny_model, prompts=["hi", "the refund " * 400])


def test_importing_the_modules_loads_no_heavy_library() -> None:
    code = (
        "import sys, json, audits.checks.bias, audits.checks.answers\n"
        "heavy = ['fairlearn', 'sklearn', 'torch', 'transformers', 'matplotlib', 'pandas', 'django']\n"
        "print(json.dumps([name for name in heavy if name in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
