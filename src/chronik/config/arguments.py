"""The command line: ``--config``, ``--set`` and one flag per setting, with ``--help`` text."""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import fields
from typing import Any

from .kinds import _Path
from .settings import _SETTINGS_LIST, CONFIG_ENV, KAFKA_SETTINGS, BrokerConfig, _Setting

_GROUP_TITLES = {
    "broker": "broker settings",
    "kafka": "Kafka broker settings (also --set KAFKA.NAME=VALUE; in the config file under their Kafka names)",
    "cluster": "cluster settings",
}


def _help(setting: _Setting) -> str:
    if setting.default_doc is not None:
        default = setting.default_doc
    else:
        default = next(f.default for f in fields(BrokerConfig) if f.name == setting.name)
        default = setting.kind.to_text(default)
        if isinstance(setting.kind, _Path):
            default = "./" + default if not default.startswith(("/", ".")) else default
    if setting.kafka:
        keys = f'"{setting.kafka}" (top level or in [kafka])'
    elif setting.name == "peers":
        keys = "[[peers]] tables with id, kafka, replication"
    else:
        keys = " or ".join(setting.keys)
    parts = [setting.doc]
    if setting.kafka:
        parts.insert(0, f"Kafka {setting.kafka}:")
    described = setting.kind.describe()
    if described:
        parts.append(f"Value: {described}.")
    parts.append(f"Default: {default}. Env: {setting.env}. File key: {keys}.")
    return " ".join(parts).replace("%", "%%")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that a word is never split across lines: environment
    variable and setting names (``CHRONIK_LISTENER_NAME_REPLICATION_SSL_KEYSTORE_LOCATION``)
    are wider than the help column, and an operator copies them from ``--help``."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--set`` and one flag per setting to ``parser`` (and, when it uses
    argparse's default formatter, a formatter that keeps long names whole).

    Every flag defaults to None ("not given"); :func:`load_config` does the
    parsing and validation so that errors name their source consistently.
    """
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = _HelpFormatter
    source = parser.add_argument_group(
        "configuration sources",
        "Precedence: defaults < config file < CHRONIK_* environment variables < flags. "
        "Empty environment variables count as unset.",
    )
    source.add_argument(
        "--config", metavar="PATH", default=None,
        help=f"TOML config file (env {CONFIG_ENV}). Unknown keys are errors.",
    )
    source.add_argument(
        "--set", metavar="KAFKA.NAME=VALUE", action="append", default=None, dest="kafka_set",
        help="Set a Kafka-named broker setting, e.g. --set num.partitions=3 (repeatable; known names: "
        + ", ".join(KAFKA_SETTINGS) + ").",
    )
    groups = {key: parser.add_argument_group(title) for key, title in _GROUP_TITLES.items()}
    for setting in _SETTINGS_LIST:
        kwargs: dict[str, Any] = {"metavar": setting.kind.metavar, "default": None, "help": _help(setting)}
        if setting.name == "peers":
            kwargs["action"] = "append"
        groups[setting.group].add_argument(setting.option, dest=setting.name, **kwargs)
