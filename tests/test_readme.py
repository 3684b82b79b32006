"""README.md tells the truth about what the broker serves."""

from __future__ import annotations

import re
from pathlib import Path

from chronik.handlers import served_versions

README = Path(__file__).resolve().parents[1] / "README.md"


def kafka_name(kio_name: str) -> str:
    return "".join(part.capitalize() for part in kio_name.split("_"))


def test_api_table_matches_the_registered_handlers() -> None:
    section = README.read_text().split("## What it serves", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([A-Za-z]+) \| (\d+)(?:-(\d+))? \|", section, re.MULTILINE)
    documented = {name: (int(low), int(high or low)) for name, low, high in rows}
    served = {kafka_name(r.name): (r.min_version, r.max_version) for r in served_versions()}
    assert documented == served


def test_readme_keeps_the_two_commands() -> None:
    text = README.read_text()
    assert "pip install . && python -m chronik serve" in text
    assert "python -m pytest -q" in text
