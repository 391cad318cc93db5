"""The layout stays readable: no module of the service over ~600 lines (tests and migrations
aside), except the few that docs/ names with the reason they stay whole."""

from __future__ import annotations

import ast
import re
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

LIMIT = 600
# Each stays one module on purpose; docs/layout.md says why, and this test holds it to that.
WHOLE = {"serving/server.py", "serving/manifests.py", "audits/ledger/services.py", "config/settings/base.py"}


def _modules() -> dict[str, int]:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = {}
    for path in listed.stdout.split():
        if re.search(r"(^|/)(tests|migrations)/|(^|/)conftest\.py$", path) or not (ROOT / path).exists():
            continue
        found[path] = len((ROOT / path).read_text().splitlines())
    return found


def test_no_module_grows_past_the_limit_unless_docs_say_why() -> None:
    sizes = _modules()
    assert len(sizes) > 100, "git ls-files found too few modules: is this a checkout?"
    too_long = {path: lines for path, lines in sizes.items() if lines > LIMIT and path not in WHOLE}
    assert not too_long, f"split these into packages by sub-domain, or name them in docs/layout.md: {too_long}"


def test_every_module_kept_whole_is_explained_and_still_needs_it() -> None:
    layout = (ROOT / "docs" / "layout.md").read_text()
    sizes = _modules()
    for path in WHOLE:
        assert f"`{path}`" in layout, f"docs/layout.md does not say why {path} stays one module"
        assert sizes[path] > LIMIT, f"{path} is back under {LIMIT} lines: drop it from WHOLE and docs/layout.md"


def _marks_one_pass(decorators: list[ast.expr]) -> bool:
    return any("one_pass" in ast.unparse(d) for d in decorators)


def test_every_browser_walk_names_the_one_pass_that_runs_it() -> None:
    """A walk (a test opening ``tests.browser.browser``) is marked ``one_pass``, on itself or its
    module, so make test does not run its screens twice (conftest.SINGLE_WALK)."""
    listed = subprocess.run(["git", "ls-files", "*test_*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    walks, unmarked = [], []
    for path in listed.stdout.split():
        if not (ROOT / path).exists():
            continue
        tree = ast.parse((ROOT / path).read_text())
        module_marked = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and "one_pass" in ast.unparse(node.value)
            for node in tree.body
        )
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            opens = any(
                isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "browser"
                for call in ast.walk(node)
            )
            if opens:
                walks.append(f"{path}::{node.name}")
                if not (module_marked or _marks_one_pass(node.decorator_list)):
                    unmarked.append(f"{path}::{node.name}")
    assert len(walks) >= 10, f"found too few browser walks to trust the search: {walks}"
    assert not unmarked, f"mark these one_pass('embedded' or 'scale'): {unmarked}"
