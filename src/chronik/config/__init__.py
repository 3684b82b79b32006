"""Broker configuration: one frozen :class:`BrokerConfig`, validated at start-up.

Where a setting comes from, lowest precedence first::

    defaults  <  config file (TOML, --config PATH / CHRONIK_CONFIG)  <  CHRONIK_* environment  <  flags

Naming scheme (one rule, no exceptions except ``peers``):

* Field ``name`` (a Python identifier) has the flag ``--name-with-dashes`` and
  the environment variable ``CHRONIK_NAME_UPPER``.  Empty environment
  variables count as unset.
* Kafka broker settings keep their Kafka names (``num.partitions``); their
  field is the Kafka name with dots turned into underscores
  (``num_partitions``), so the flag is ``--num-partitions`` and the
  environment variable ``CHRONIK_NUM_PARTITIONS``.  ``--set KAFKA.NAME=VALUE``
  (repeatable) sets any of them too; giving one both ways is an error.
  :data:`KAFKA_SETTINGS` maps Kafka names to field names.
* ``peers`` is ``--peer ID@KAFKA_HOST:PORT/REPLICATION_HOST:PORT``
  (repeatable, or comma-separated) and ``CHRONIK_PEERS`` (comma-separated);
  flags or environment replace the file's whole list.

In the TOML file, plain settings are flat keys (``data_dir = "..."``,
``listen = "..."``); the listeners may also be written as a ``[listeners]``
table (``kafka`` / ``replication`` / ``metrics``) and the advertised address
as ``[advertised] kafka``.  Kafka settings are written under their Kafka
names, either quoted at the top level (``"num.partitions" = 3``) or inside a
``[kafka]`` table (``"num.partitions" = 3``; unquoted dotted keys work too,
TOML turns them into nested tables and the loader flattens them back).
Peers are an array of tables ``[[peers]]`` with ``id``, ``kafka`` and
``replication``.  Unknown keys and wrong TOML types are errors.

Every problem is a :class:`ConfigError` whose message names the setting and
where the bad value came from (flag, environment variable, file and key), so
the command line can print it as one line instead of a traceback.

The package: :mod:`.kinds` (value kinds, HostPort/Peer, the errors),
:mod:`.settings` (the settings table and BrokerConfig), :mod:`.loading`
(file, environment and flags -> BrokerConfig) and :mod:`.arguments` (the
argparse flags and their ``--help``).
"""

from __future__ import annotations

from .arguments import add_serve_arguments
from .kinds import ConfigError, HostPort, Peer, parse_host_port
from .loading import load_config
from .settings import KAFKA_SETTING_DOCS, KAFKA_SETTINGS, BrokerConfig

__all__ = [
    "BrokerConfig",
    "ConfigError",
    "HostPort",
    "KAFKA_SETTINGS",
    "KAFKA_SETTING_DOCS",
    "Peer",
    "add_serve_arguments",
    "load_config",
    "parse_host_port",
]
