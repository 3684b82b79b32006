"""Every relative link in README.md, docs/*.md and bench/README.md points to a file that exists and,
when it names an anchor in a Markdown file, to a heading of that file.

README is the user guide and links to docs/ for the detail (issue 12); a section moved or renamed
must not leave a link behind it.  Anchors are GitHub's: the heading's text lower-cased, every
character but letters, digits, ``_``, ``-`` and spaces dropped, spaces turned into ``-``, and
``-1``, ``-2`` ... appended to repeats.  Links and headings inside code blocks and code spans do
not count.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).*?\1", re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def prose(markdown: str) -> str:
    """The text outside fenced code blocks (blank lines kept in their place)."""
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)


def anchors(markdown: str) -> set[str]:
    """GitHub's anchor of every heading."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(prose(markdown)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its target
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(document: Path) -> list[str]:
    """The relative links of one Markdown file that do not resolve, as ``target: why``."""
    text = _CODE_SPAN.sub("", prose(document.read_text()))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target}: no such heading in {resolved.name}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    assert broken_links(document) == []


def test_broken_links_are_found(tmp_path: Path) -> None:
    """The check above can fail: a missing file, a missing heading, a repeated heading's anchor."""
    (tmp_path / "other.md").write_text("# Other\n\n## Disk layer (`bench/fsync.py --seconds 1.5`)\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#disk-layer-benchfsyncpy---seconds-15) [ok](other.md#twice-1) [ok](#page)\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [third](other.md#twice-2) [web](https://example.com/x)\n"
        "`[in a span](missing-too.md)`\n\n```\n[in a block](missing-three.md)\n# not a heading\n```\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no such heading in other.md",
        "other.md#twice-2: no such heading in other.md",
    ]
