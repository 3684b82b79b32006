"""Loading: defaults < config file (TOML) < ``CHRONIK_*`` environment < flags."""

from __future__ import annotations

import argparse
import difflib
import logging
import tomllib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .kinds import ConfigError, _Blame
from .settings import _FILE_KEYS, _SETTINGS, _SETTINGS_LIST, CONFIG_ENV, ENV_PREFIX, KAFKA_SETTINGS, BrokerConfig, _Setting

log = logging.getLogger("chronik.config")


def load_config(args: argparse.Namespace, environ: Mapping[str, str]) -> BrokerConfig:
    """Build the :class:`BrokerConfig` from defaults, file, environment and flags.

    ``args`` comes from a parser prepared by :func:`add_serve_arguments`;
    attributes it lacks count as "flag not given".  Raises :class:`ConfigError`.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    path = getattr(args, "config", None)
    path_source = "flag --config"
    if not path and environ.get(CONFIG_ENV):
        path, path_source = environ[CONFIG_ENV], f"environment variable {CONFIG_ENV}"
    if path:
        for name, value, where in _read_file(Path(path), path_source):
            values[name], sources[name] = value, where

    known_env = {s.env for s in _SETTINGS_LIST} | {CONFIG_ENV}
    unknown_env = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known_env)
    if unknown_env:
        hints = []
        for name in unknown_env:  # compared without the common prefix, which would make every name "close"
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in known_env],
                                              n=1, cutoff=0.6)
            hints.append(f"{name} (did you mean {ENV_PREFIX}{close[0]}?)" if close else name)
        log.warning("ignoring unknown environment variable(s): %s", ", ".join(hints))
    for setting in _SETTINGS_LIST:
        text = environ.get(setting.env, "")
        if text.strip():
            where = f"environment variable {setting.env}"
            values[setting.name], sources[setting.name] = _parse_text(setting, text, where), where

    for name, value, where in _flag_values(args):
        values[name], sources[name] = value, where

    return BrokerConfig(**values, sources=sources)


def _parse_text(setting: _Setting, text: str, where: str) -> Any:
    with _Blame(setting.label, where):
        return setting.kind.from_text(text)


def _flag_values(args: argparse.Namespace) -> Iterator[tuple[str, Any, str]]:
    from_set: dict[str, tuple[str, str]] = {}
    for item in getattr(args, "kafka_set", None) or ():
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"--set {item!r}: expected KAFKA.NAME=VALUE")
        if key not in KAFKA_SETTINGS:
            raise ConfigError(f"--set {item!r}: unknown Kafka setting {key!r}{_suggest(key, KAFKA_SETTINGS)}")
        from_set[KAFKA_SETTINGS[key]] = (text, f"flag --set {key}")
    for setting in _SETTINGS_LIST:
        given = getattr(args, setting.name, None)
        if given is not None and setting.name in from_set:
            raise ConfigError(f"{setting.label} is given twice on the command line: {setting.option} and --set {setting.kafka}")
        if setting.name in from_set:
            text, where = from_set[setting.name]
            yield setting.name, _parse_text(setting, text, where), where
        elif given is not None:
            where = f"flag {setting.option}"
            if setting.name == "peers":
                yield setting.name, tuple(p for g in given for p in _parse_text(setting, g, where)), where
            else:
                yield setting.name, _parse_text(setting, given, where), where


def _read_file(path: Path, path_source: str) -> list[tuple[str, Any, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} (from {path_source}) does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path} (from {path_source}): {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    found: dict[str, tuple[str, Any]] = {}  # field -> (key, raw value)
    unknown: list[str] = []
    for key, value in _file_entries(document):
        name = _FILE_KEYS.get(key)
        if name is None:
            unknown.append(key)
        elif name in found:
            raise ConfigError(f"config file {path} sets {_SETTINGS[name].label} twice: as {found[name][0]} and as {key}")
        else:
            found[name] = (key, value)
    if unknown:
        hints = "; ".join(f"{k!r}{_suggest(k, _FILE_KEYS)}" for k in unknown)
        raise ConfigError(f"config file {path}: unknown key(s): {hints}")

    entries = []
    for name, (key, value) in found.items():
        where = f"config file {path}, key {key}"
        with _Blame(_SETTINGS[name].label, where):
            entries.append((name, _SETTINGS[name].kind.from_toml(value), where))
    return entries


def _file_entries(document: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every setting in a parsed TOML document."""
    for key, value in document.items():
        if key == "peers":
            yield key, value
        elif isinstance(value, dict):
            yield from _flatten(key, value)
        else:
            yield key, value


def _flatten(prefix: str, table: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(f"{prefix}.{key}", value)
        else:
            yield f"{prefix}.{key}", value


def _suggest(key: str, known: Iterable[str]) -> str:
    candidates = list(known)
    # Python-style spellings of Kafka names: num_partitions -> num.partitions
    for kafka_name, name in KAFKA_SETTINGS.items():
        if key.removeprefix("kafka.") == name:
            return f" (did you mean {kafka_name!r}?)"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
