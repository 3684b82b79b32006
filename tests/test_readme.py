"""README.md tells the truth about what the broker serves and how it is configured."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from chronik.config import add_serve_arguments
from chronik.handlers import served_versions

README = Path(__file__).resolve().parents[1] / "README.md"


def kafka_name(kio_name: str) -> str:
    return "".join(part.capitalize() for part in kio_name.split("_"))


def readme_section(title: str) -> str:
    return README.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_api_table_matches_the_registered_handlers() -> None:
    rows = re.findall(r"^\| ([A-Za-z]+) \| (\d+)(?:-(\d+))? \|", readme_section("What it serves"), re.MULTILINE)
    documented = {name: (int(low), int(high or low)) for name, low, high in rows}
    served = {kafka_name(r.name): (r.min_version, r.max_version) for r in served_versions()}
    assert documented == served


_SETTING_HELP = re.compile(r"Default: (?P<default>.*?)\. Env: (?P<env>\S+)\. File key: (?P<keys>.*)\.$")


def settings_from_help() -> dict[str, re.Match[str]]:
    """What ``serve --help`` says of every setting, by flag: its default, environment variable and TOML keys."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings = {}
    for action in parser._actions:
        if action.dest in ("help", "config", "kafka_set"):  # the sources, not settings
            continue
        match = _SETTING_HELP.search(action.help or "")
        assert match is not None, f"--help of {action.option_strings} does not state its default, env and file key"
        settings[action.option_strings[0]] = match
    return settings


def test_configuration_table_matches_the_settings() -> None:
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `([A-Z_]+)` \| ([^|]+) \| ([^|]+) \| [^|]+ \|$",
                      readme_section("Configuration"), re.MULTILINE)
    documented = {flag: (env, keys, default) for flag, env, keys, default in rows}
    settings = settings_from_help()
    assert "--metadata-snapshot-every" in settings
    assert len(documented) == len(rows), "a flag is listed twice"
    assert sorted(documented) == sorted(settings), "README's configuration table lists other options than the code"
    for flag, (env, keys, default) in documented.items():
        said = settings[flag]
        assert env == said["env"], flag
        assert default.replace("`", "").strip() == said["default"], flag
        file_keys = re.findall(r"`([^`]+)`", keys)
        assert file_keys and set(file_keys) <= set(re.split(r'[\s"()]+', said["keys"])), flag


def test_readme_keeps_the_two_commands() -> None:
    text = README.read_text()
    assert "pip install . && python -m chronik serve" in text
    assert "python -m pytest -q" in text
