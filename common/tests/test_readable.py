"""Structured (JSON) values as admin pages show them (``common.admin.readable``): lists and
tables a person reads, everything escaped, long values cut with a count of the rest."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from common.admin import readable, readable_field

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)


def test_plain_values_lists_and_objects() -> None:
    assert readable(None) == readable([]) == readable({}) == readable("") == '<span class="readable-empty">-</span>'
    assert readable(True) == "yes" and readable(3) == "3"
    assert readable(["customers", "staff"]) == '<ul class="readable"><li>customers</li><li>staff</li></ul>'
    assert readable({"spacy": "3.8", "entities": ["EMAIL_ADDRESS"]}) == (
        '<table class="readable"><tr><th scope="row">spacy</th><td>3.8</td></tr>'
        '<tr><th scope="row">entities</th><td><ul class="readable"><li>EMAIL_ADDRESS</li></ul></td></tr></table>'
    )


def test_a_list_of_objects_is_a_table_with_a_column_per_name() -> None:
    samples = [{"record": 1, "field": "text"}, {"record": 2, "start": 4}]
    assert readable(samples) == (
        '<table class="readable"><thead><tr><th scope="col">record</th><th scope="col">field</th>'
        '<th scope="col">start</th></tr></thead><tbody>'
        '<tr><td>1</td><td>text</td><td><span class="readable-empty">-</span></td></tr>'
        '<tr><td>2</td><td><span class="readable-empty">-</span></td><td>4</td></tr></tbody></table>'
    )


def test_everything_is_escaped_and_long_values_are_cut() -> None:
    assert readable({"<b>": "<script>x</script>"}) == (
        '<table class="readable"><tr><th scope="row">&lt;b&gt;</th><td>&lt;script&gt;x&lt;/script&gt;</td></tr></table>'
    )
    assert readable(list(range(5)), limit=2) == '<ul class="readable"><li>0</li><li>1</li><li>and 3 more</li></ul>'
    assert readable({str(i): i for i in range(3)}, limit=1).endswith('<tr><td colspan="2">and 2 more</td></tr></table>')


def test_a_readable_field_for_an_admin_page() -> None:
    shown = readable_field("recipients")
    assert shown.short_description == "recipients"  # type: ignore[attr-defined]
    assert shown(None, SimpleNamespace(recipients=["processor"])) == '<ul class="readable"><li>processor</li></ul>'
