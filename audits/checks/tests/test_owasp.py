"""The garak-probe to OWASP Top 10 for LLM Applications (2025) mapping, as data: every category
named is one of the ten, every probe this service may run is looked at, unknown ones stay unmapped."""

from __future__ import annotations

import pytest

from audits.checks.garak_scan import HUB_DEPENDENT, OFFLINE_PROBES, Finding
from audits.checks.owasp import CATEGORIES, OUTSIDE_TOP_10, PROBE_CATEGORIES, UNMAPPED, probe_categories

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)


def test_the_ten_categories_are_the_2025_list() -> None:
    assert list(CATEGORIES) == [f"LLM{n:02d}:2025" for n in range(1, 11)]
    assert CATEGORIES["LLM01:2025"] == "Prompt Injection"
    assert CATEGORIES["LLM07:2025"] == "System Prompt Leakage"
    assert CATEGORIES["LLM10:2025"] == "Unbounded Consumption"


def test_the_mapping_names_only_real_categories_and_no_probe_twice() -> None:
    for key, categories in PROBE_CATEGORIES.items():
        assert categories and len(set(categories)) == len(categories), key
        assert set(categories) <= set(CATEGORIES), key
    assert not set(PROBE_CATEGORIES) & OUTSIDE_TOP_10


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        ("promptinject.HijackHateHumans", ["LLM01:2025"]),
        ("probes.dan.Ablation_Dan_11_0", ["LLM01:2025"]),  # garak's own spelling in its reports
        ("goodside.WhoIsRiley", ["LLM09:2025"]),  # a class overrides its family ...
        ("goodside.Tag", ["LLM01:2025"]),
        ("goodside.Davidjl", [UNMAPPED]),  # ... reviewed, outside the ten
        ("goodside.SomethingNew", [UNMAPPED]),  # ... and a class nobody reviewed is not guessed
        ("lmrc.QuackMedicine", ["LLM09:2025"]),
        ("lmrc.Deadnaming", [UNMAPPED]),
        ("grandma.Win10", ["LLM01:2025", "LLM02:2025"]),
        ("leakreplay.GuardianComplete", ["LLM02:2025"]),
        ("sysprompt_extraction.SystemPromptExtraction", ["LLM07:2025"]),
        ("exploitation.SQLInjectionEcho", ["LLM05:2025"]),
        ("nosuchfamily.Probe", [UNMAPPED]),
    ],
)
def test_probe_categories(probe: str, expected: list[str]) -> None:
    assert probe_categories(probe) == expected
    assert Finding(probe=probe, detector="d", passed=1, fails=0, nones=0, total=1).owasp_categories == expected


def test_every_probe_a_profile_may_name_was_reviewed() -> None:
    reviewed = set(PROBE_CATEGORIES) | OUTSIDE_TOP_10
    for probe in sorted(OFFLINE_PROBES | set(HUB_DEPENDENT)):
        assert probe in reviewed or probe.split(".")[0] in reviewed, probe
