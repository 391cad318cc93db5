"""The Markdown documentation stays navigable: every relative link in the repository's ``*.md`` files
points at a file or folder of the repository, every ``#anchor`` at a real heading (GitHub's slugs),
no link leaves the repository, and README.md stays short enough to read (at most 250 lines).

The parser follows CommonMark where it matters for links: fenced code blocks (``` and ~~~, closed
only by a fence of the same character at least as long) and code spans hold no links, nor do
backslash-escaped brackets; link destinations may hold balanced parentheses or be written
``<...>``; reference definitions and the ``href``/``src`` of raw HTML count as links. Indented code
blocks are not recognised (the docs fence their code). External links (``https:``, ``mailto:``...)
are not fetched.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
# A line that cannot be the text of a setext heading: blank, indented code, a list item, a quote,
# an ATX heading, a table row.
_NOT_SETEXT_TEXT = re.compile(r"^(?:[ \t]*$| {4,}| {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)| {0,3}[>#|])")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[(?:[^\]\\]|\\.)+\]:[ \t]*(<[^>\n]*>|\S+)")
_HTML_LINK = re.compile(r"<[A-Za-z][^>]*?\b(?:href|src)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.IGNORECASE)
_HTML_ANCHOR = re.compile(r"<[A-Za-z][^>]*?\b(?:id|name)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_EMPHASIS = [
    re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"),
    re.compile(r"(?<![\w])__(?=\S)(.+?)(?<=\S)__(?![\w])"),
    re.compile(r"\*(?=\S)(.+?)(?<=\S)\*"),
    re.compile(r"(?<![\w])_(?=\S)(.+?)(?<=\S)_(?![\w])"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
]


@dataclass(frozen=True)
class Link:
    line: int
    target: str


@dataclass(frozen=True)
class Line:
    raw: str  # "" inside fenced code blocks
    masked: str  # raw, with code spans and escaped brackets blanked out (same length)


def _git_files(*patterns: str) -> list[str]:
    """Files a clone holds, plus new ones not yet added (git's ignore rules apply)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *patterns],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def repository_paths() -> set[str]:
    """Every file of the repository and every folder above one, relative to the root."""
    paths: set[str] = set()
    for name in _git_files():
        parts = name.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return paths


def _mask(line: str) -> str:
    """Blank out code spans (a run of n backticks closed by a run of exactly n) and backslash
    escapes, keeping every offset."""
    out, i = [], 0
    while i < len(line):
        char = line[i]
        if char == "\\" and i + 1 < len(line):
            out.append("  ")
            i += 2
        elif char == "`":
            run = len(line) - i - len(line[i:].lstrip("`"))
            closing = re.compile(r"(?<!`)" + "`" * run + r"(?!`)").search(line, i + run)
            if closing is None:  # no closing run: the backticks are literal
                out.append(" " * run)
                i += run
            else:
                out.append(" " * (closing.end() - i))
                i = closing.end()
        else:
            out.append(char)
            i += 1
    return "".join(out)


def parse_lines(text: str) -> list[Line]:
    """Every line of ``text``, those of fenced code blocks (fences included) emptied."""
    lines: list[Line] = []
    fence: str | None = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None:
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                fence = match.group(1)
                lines.append(Line("", ""))
            else:
                lines.append(Line(line, _mask(line)))
            continue
        marker = match.group(1) if match else ""
        if marker and marker[0] == fence[0] and len(marker) >= len(fence) and not match.group(2).strip():
            fence = None
        lines.append(Line("", ""))
    return lines


def _destination(text: str, start: int) -> tuple[int, int] | None:
    """Where the link destination that follows ``](`` at ``text[start]`` lies, or None."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "\n":  # one line ending may precede the destination
        i += 1
        while i < len(text) and text[i] in " \t":
            i += 1
    if i < len(text) and text[i] == "<":
        end = text.find(">", i)
        return None if end < 0 or "\n" in text[i:end] else (i + 1, end)
    depth, j = 0, i
    while j < len(text) and text[j] not in " \t\n" and not (text[j] == ")" and depth == 0):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        j += 1
    return (i, j) if depth == 0 else None


def _opening_bracket(text: str, close: int) -> bool:
    """Whether the ``]`` at ``close`` closes a ``[`` of the same paragraph (brackets nest)."""
    depth = 0
    for i in range(close - 1, -1, -1):
        if text[i] == "]":
            depth += 1
        elif text[i] == "[":
            if depth == 0:
                return True
            depth -= 1
        elif text[i] == "\n" and text[i - 1 : i] == "\n":
            return False
    return False


def links(text: str) -> list[Link]:
    """Every link destination in ``text``: inline links and images, reference definitions, and the
    ``href``/``src`` of raw HTML, outside code."""
    lines = parse_lines(text)
    found: list[Link] = []
    for number, line in enumerate(lines, start=1):
        definition = _REFERENCE_DEFINITION.match(line.masked)
        if definition:
            start, end = definition.span(1)
            found.append(Link(number, line.raw[start:end].removeprefix("<").removesuffix(">")))
        for match in _HTML_LINK.finditer(line.masked):
            group = 1 if match.group(1) is not None else 2
            found.append(Link(number, line.raw[match.start(group) : match.end(group)]))
    masked = "\n".join(line.masked for line in lines)
    raw = "\n".join(line.raw for line in lines)
    for match in re.finditer(r"\]\(", masked):
        if not _opening_bracket(masked, match.start()):
            continue
        span = _destination(masked, match.end())
        if span is not None:
            found.append(Link(masked.count("\n", 0, match.start()) + 1, raw[span[0] : span[1]]))
    return found


def _heading_text(markdown: str) -> str:
    """The text GitHub renders for a heading's Markdown, which its slug is made from."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown)  # links and images: their text
    text = re.sub(r"(`+)(.+?)\1", r"\2", text)  # code spans: their content
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    for pattern in _EMPHASIS:
        text = pattern.sub(r"\1", text)
    return re.sub(r"\\(.)", r"\1", text).strip()


def slug(text: str) -> str:
    """GitHub's heading anchor (github-slugger): lower case; every character that is not a letter,
    a mark, a digit, a connector punctuation (``_``), a space or a hyphen dropped; each space a
    hyphen."""
    kept = []
    for char in text.lower():
        category = unicodedata.category(char)
        if char in " -" or category[0] in "LMN" or category == "Pc":
            kept.append("-" if char == " " else char)
    return "".join(kept)


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown file: its headings' slugs, repeats numbered as GitHub numbers them
    (``x``, ``x-1``, ``x-2``...), and the ids and names of raw HTML elements."""
    result: set[str] = set()
    repeats: dict[str, int] = {}

    def add(heading: str) -> None:
        base = name = slug(_heading_text(heading))
        while name in result:
            repeats[base] = repeats.get(base, 0) + 1
            name = f"{base}-{repeats[base]}"
        result.add(name)

    previous = Line("", "")
    for line in parse_lines(text):
        atx = _ATX.match(line.raw)
        if atx:
            add(re.sub(r"(?:^|[ \t]+)#+[ \t]*$", "", atx.group(2) or ""))
        elif _SETEXT.match(line.raw) and not _NOT_SETEXT_TEXT.match(previous.raw) and not _SETEXT.match(previous.raw):
            add(previous.raw)
        for match in _HTML_ANCHOR.finditer(line.masked):
            group = 1 if match.group(1) is not None else 2
            result.add(line.raw[match.start(group) : match.end(group)])
        previous = line
    return result


def problems(files: list[str], paths: set[str], read: Callable[[str], str]) -> list[str]:
    """Every broken link of ``files`` (paths relative to the repository's root, ``paths`` all of
    its files and folders, ``read`` a file's text by that path), as ``file:line: target: why``."""
    cache: dict[str, set[str]] = {}
    found = []
    for source in files:
        folder = Path("/", source).parent
        for link in links(read(source)):
            target = link.target.strip()
            report = f"{source}:{link.line}: {target}"
            if target.lower().startswith("file:") or target.startswith("/"):
                found.append(f"{report}: an absolute local path, outside the repository")
                continue
            if _SCHEME.match(target):
                continue  # an external link (https:, mailto:...): not fetched
            path_part, _, fragment = target.partition("#")
            path_part = unquote(path_part.partition("?")[0])
            resolved = Path("/", source) if not path_part else folder / path_part
            parts: list[str] = []
            for part in resolved.parts[1:]:
                if part == "..":
                    if not parts:
                        break
                    parts.pop()
                elif part != ".":
                    parts.append(part)
            else:
                relative = "/".join(parts)
                if relative and relative not in paths:
                    found.append(f"{report}: no such file or folder in the repository")
                elif fragment and not relative.lower().endswith(".md"):
                    found.append(f"{report}: an anchor into a file that is not Markdown cannot be checked")
                elif fragment:
                    if relative not in cache:
                        cache[relative] = anchors(read(relative))
                    if unquote(fragment) not in cache[relative]:
                        found.append(f"{report}: no heading with the anchor #{fragment} in {relative}")
                continue
            found.append(f"{report}: leads outside the repository")
    return found


def _read(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


# --- The repository's documentation ------------------------------------------------------------


def test_readme_stays_short() -> None:
    lines = _read("README.md").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {README_MAX_LINES} and move reference to docs/"
    )


def test_every_relative_link_and_anchor_resolves() -> None:
    files = _git_files("*.md")
    assert "README.md" in files and any(name.startswith("docs/") for name in files)
    broken = problems(files, repository_paths(), _read)
    assert not broken, "broken links in the Markdown documentation:\n" + "\n".join(broken)


# --- The checker itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Two commands", "two-commands"),
        ("Scale mode: PostgreSQL and Redis", "scale-mode-postgresql-and-redis"),
        ("Serving platforms (KServe, vLLM)", "serving-platforms-kserve-vllm"),
        ("bench.pii", "benchpii"),
        ("Sign-in, lockouts and request limits", "sign-in-lockouts-and-request-limits"),
        ("`make up` and **bold** [a link](x.md)", "make-up-and-bold-a-link"),
        ("snake_case_name and _emphasis_", "snake_case_name-and-emphasis"),
        ("Déjà vu — 2 \N{MULTIPLICATION SIGN} 3", "déjà-vu--2--3"),
        ("  Surrounding spaces  ", "surrounding-spaces"),
    ],
)
def test_slugs_follow_github(heading: str, expected: str) -> None:
    assert slug(_heading_text(heading)) == expected


def test_anchors() -> None:
    text = (
        "# Title\n\n## Usage\n\n## Usage ##\n\n```sh\n# not a heading\n```\n\n"
        "Setext heading\n--------------\n\n- a list item\n---\n\n| a | b |\n| --- | --- |\n"
        '<a id="custom"></a> `<a id="in-code">`\n'
    )
    assert anchors(text) == {"title", "usage", "usage-1", "setext-heading", "custom"}


def test_links_outside_code_only() -> None:
    text = (
        "See [a](a.md) and `[b](b.md)` and ![c](img/c.png).\n"
        "````md\n[d](d.md)\n```\n[e](e.md)\n````\n"
        "~~~\n[f](f.md)\n~~~\n"
        '[g](<has space.md>) [h](path/(x).md#part "title") \\[i](i.md) [[j]](j.md)\n'
        "[ref]: docs/ref.md\n"
        '<a href="html.md">x</a>\n'
        "``code with ` inside [k](k.md)``\n"
        "a ] (not) and ](nor this)\n\n[l](\n  l.md)\n"
    )
    assert [(link.line, link.target) for link in links(text)] == [
        (11, "docs/ref.md"), (12, "html.md"), (1, "a.md"), (1, "img/c.png"), (10, "has space.md"),
        (10, "path/(x).md#part"), (10, "j.md"), (16, "l.md"),
    ]  # fmt: skip


def test_problems_are_named() -> None:
    files = {
        "README.md": "[ok](docs/a.md#usage) [dir](docs/) [self](#top) [web](https://example.org/#x)\n# Top\n",
        "docs/a.md": (
            "## Usage\n[up](../README.md#top) [gone](nowhere.md) [bad](a.md#no-such-heading)\n"
            "[out](../../elsewhere/DESIGN.md) [abs](/etc/passwd) [file](file:///etc/passwd)\n"
            "[py](../config/env.py#L1) [py](../config/env.py) [space](b%20c.md)\n"
        ),
        "docs/b c.md": "",
        "config/env.py": "",
    }
    paths = {"README.md", "docs", "docs/a.md", "docs/b c.md", "config", "config/env.py"}
    found = problems(list(files), paths, files.__getitem__)
    assert [line.split(": ")[1:] for line in found] == [
        ["nowhere.md", "no such file or folder in the repository"],
        ["a.md#no-such-heading", "no heading with the anchor #no-such-heading in docs/a.md"],
        ["../../elsewhere/DESIGN.md", "leads outside the repository"],
        ["/etc/passwd", "an absolute local path, outside the repository"],
        ["file:///etc/passwd", "an absolute local path, outside the repository"],
        ["../config/env.py#L1", "an anchor into a file that is not Markdown cannot be checked"],
    ]
