from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from chronik.config import (
    KAFKA_SETTINGS,
    BrokerConfig,
    ConfigError,
    HostPort,
    Peer,
    add_serve_arguments,
    load_config,
    parse_host_port,
)
from chronik.metadata.topic_configs import TOPIC_CONFIGS, InvalidConfig
from chronik.storage import COMMIT_PROFILES, available_backends, default_backend_name

CLUSTER_TOML = """\
node_id = 1
data_dir = "/var/lib/chronik/node1"
[listeners]
kafka = "127.0.0.1:9092"          # also advertised unless [advertised] says otherwise
replication = "127.0.0.1:9291"
metrics = "127.0.0.1:9644"        # optional
[[peers]]                          # every voter, this node included
id = 1
kafka = "127.0.0.1:9092"
replication = "127.0.0.1:9291"
[[peers]]
id = 2
kafka = "127.0.0.1:9093"
replication = "127.0.0.1:9292"
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chronik serve")
    add_serve_arguments(p)
    return p


def load(argv: list[str] | None = None, env: dict[str, str] | None = None, toml: str | None = None, tmp_path: Path | None = None) -> BrokerConfig:
    if toml is not None:
        assert tmp_path is not None
        path = tmp_path / "chronik.toml"
        path.write_text(toml)
        argv = ["--config", str(path), *(argv or [])]
    return load_config(parser().parse_args(argv or []), env or {})


def config_error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --- defaults ---------------------------------------------------------------


def test_defaults() -> None:
    config = load()
    assert config.data_dir == Path("./chronik-data")
    assert config.listen == HostPort("0.0.0.0", 9092)
    assert config.advertise == HostPort("localhost", 9092)
    assert config.metrics_listen is None
    assert config.wal_backend == default_backend_name()
    assert config.wal_profile == "low-latency"
    assert config.log_level == "info"
    assert config.auto_create_topics_enable is True
    assert config.num_partitions == 1
    assert config.message_max_bytes == 1048588
    assert config.log_retention_ms == 604800000
    assert config.log_retention_bytes == -1
    assert config.log_segment_bytes == 1073741824
    assert config.default_replication_factor == 1
    assert config.min_insync_replicas == 1
    assert config.group_initial_rebalance_delay_ms == 3000
    assert config.socket_request_max_bytes == 104857600
    assert config.node_id == 1
    assert config.replication_listen == HostPort("0.0.0.0", 9291)
    assert config.peers == ()
    assert config.metadata_commit == "quorum"
    assert config.rack is None
    assert set(config.sources.values()) == {"default"}
    assert config == BrokerConfig()


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BrokerConfig().num_partitions = 3  # type: ignore[misc]


def test_broker_defaults_agree_with_topic_config_defaults() -> None:
    kafka = BrokerConfig().kafka_configs()
    for topic_config in TOPIC_CONFIGS.values():
        if topic_config.broker_key:
            assert kafka[topic_config.broker_key] == topic_config.default, topic_config.name


def test_broker_minimums_agree_with_topic_config_minimums() -> None:
    # the lowest broker value a topic inherits must be a valid topic value, and one less must not
    for topic_config in TOPIC_CONFIGS.values():
        if topic_config.broker_key and topic_config.kind in ("INT", "LONG"):
            field = KAFKA_SETTINGS[topic_config.broker_key]
            low = next(n for n in (-1, 0, 1, 1024) if _valid(field, n))
            topic_config.check(str(low))
            with pytest.raises(InvalidConfig):
                topic_config.check(str(low - 1))


def _valid(field: str, value: int) -> bool:
    try:
        BrokerConfig(**{field: value})
    except ConfigError:
        return False
    return True


def test_advertise_derived_from_listen() -> None:
    assert load(["--listen", "[::]:9000"]).advertise == HostPort("localhost", 9000)
    assert load(["--listen", "10.0.0.5:9000"]).advertise == HostPort("10.0.0.5", 9000)
    assert load(["--listen", "10.0.0.5:9000", "--advertise", "kafka.example:19092"]).advertise == HostPort(
        "kafka.example", 19092
    )
    assert BrokerConfig(listen=HostPort("127.0.0.1", 0)).advertise == HostPort("127.0.0.1", 0)


# --- precedence -------------------------------------------------------------

PRECEDENCE_FILE = """\
data_dir = "/from/file"
listen = "127.0.0.1:1001"
log_level = "debug"
"num.partitions" = 2
[kafka]
"log.retention.ms" = 1000
"auto.create.topics.enable" = false
"""


def test_file_overrides_defaults(tmp_path: Path) -> None:
    config = load(toml=PRECEDENCE_FILE, tmp_path=tmp_path)
    assert config.data_dir == Path("/from/file")
    assert config.listen == HostPort("127.0.0.1", 1001)
    assert config.log_level == "debug"
    assert config.num_partitions == 2
    assert config.log_retention_ms == 1000
    assert config.auto_create_topics_enable is False
    assert config.sources["num_partitions"] == f"config file {tmp_path / 'chronik.toml'}, key num.partitions"
    assert config.sources["log_retention_ms"].endswith("key kafka.log.retention.ms")
    assert config.sources["wal_profile"] == "default"


def test_env_overrides_file(tmp_path: Path) -> None:
    env = {
        "CHRONIK_LISTEN": "127.0.0.1:2002",
        "CHRONIK_NUM_PARTITIONS": "3",
        "CHRONIK_AUTO_CREATE_TOPICS_ENABLE": "TRUE",
        "CHRONIK_LOG_LEVEL": "",  # empty: unset
    }
    config = load(env=env, toml=PRECEDENCE_FILE, tmp_path=tmp_path)
    assert config.listen == HostPort("127.0.0.1", 2002)
    assert config.num_partitions == 3
    assert config.auto_create_topics_enable is True
    assert config.log_level == "debug"  # from the file
    assert config.data_dir == Path("/from/file")
    assert config.log_retention_ms == 1000
    assert config.sources["listen"] == "environment variable CHRONIK_LISTEN"


def test_flags_override_env(tmp_path: Path) -> None:
    env = {"CHRONIK_LISTEN": "127.0.0.1:2002", "CHRONIK_NUM_PARTITIONS": "3", "CHRONIK_LOG_RETENTION_MS": "2000"}
    argv = ["--listen", "127.0.0.1:3003", "--num-partitions", "4", "--set", "log.retention.ms=-1", "--log-level", "WARNING"]
    config = load(argv, env=env, toml=PRECEDENCE_FILE, tmp_path=tmp_path)
    assert config.listen == HostPort("127.0.0.1", 3003)
    assert config.num_partitions == 4
    assert config.log_retention_ms == -1
    assert config.log_level == "warning"
    assert config.data_dir == Path("/from/file")
    assert config.sources["listen"] == "flag --listen"
    assert config.sources["log_retention_ms"] == "flag --set log.retention.ms"


def test_config_path_from_env(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('"num.partitions" = 7\n')
    assert load(env={"CHRONIK_CONFIG": str(path)}).num_partitions == 7


def test_every_kafka_setting_by_env_and_set() -> None:
    for kafka_name, field in KAFKA_SETTINGS.items():
        value = {"auto_create_topics_enable": "false", "auto_leader_rebalance_enable": "false",
                 "log_segment_bytes": "4096", "log_cleanup_policy": "compact,delete", "compression_type": "zstd",
                 "log_cleaner_enable": "false", "log_cleaner_min_cleanable_ratio": "0.7",
                 "log_cleaner_dedupe_buffer_size": "131072", "log_cleaner_io_max_bytes_per_second": "1048576.0",
                 "replica_socket_timeout_ms": "1500",
                 "controller_quorum_request_timeout_ms": "700",
                 "fetch_max_bytes": "4096", "authorizer_class_name": "chronik", "super_users": "User:a;User:b",
                 "allow_everyone_if_no_acl_found": "true",
                 "listeners": "PLAINTEXT://127.0.0.1:9092",
                 "advertised_listeners": "PLAINTEXT://broker1:9092", "listener_security_protocol_map": "PLAINTEXT:PLAINTEXT",
                 "ssl_keystore_type": "PEM", "ssl_truststore_type": "PEM", "ssl_keystore_location": "/etc/server.pem",
                 "ssl_truststore_location": "/etc/ca.pem", "ssl_client_auth": "none",
                 "ssl_enabled_protocols": "TLSv1.3", "ssl_principal_mapping_rules": "RULE:^CN=(.*?),.*$/$1/L,DEFAULT",
                 "sasl_enabled_mechanisms": "SCRAM-SHA-512",
                 "listener_name_replication_ssl_keystore_location": "/etc/replication.pem",
                 "listener_name_replication_ssl_truststore_location": "/etc/cluster-ca.pem",
                 "ssl_endpoint_identification_algorithm": "https"}.get(field, "7")
        env_name = "CHRONIK_" + kafka_name.replace(".", "_").upper()
        from_env = load(env={env_name: value})
        from_set = load(["--set", f"{kafka_name}={value}"])
        assert from_env.kafka_configs()[kafka_name] == from_set.kafka_configs()[kafka_name] == value


def test_unquoted_dotted_kafka_keys_work(tmp_path: Path) -> None:
    config = load(toml="log.segment.bytes = 4096\n[kafka]\nnum.partitions = 6\n", tmp_path=tmp_path)
    assert config.log_segment_bytes == 4096
    assert config.num_partitions == 6


def test_peers_from_flags_and_env() -> None:
    expected = (
        Peer(1, HostPort("h1", 9092), HostPort("h1", 9291)),
        Peer(2, HostPort("h2", 9092), HostPort("h2", 9291)),
    )
    from_flags = load(["--peer", "1@h1:9092/h1:9291", "--peer", "2@h2:9092/h2:9291"])
    from_env = load(env={"CHRONIK_PEERS": "1@h1:9092/h1:9291, 2@h2:9092/h2:9291"})
    assert from_flags.peers == from_env.peers == expected


# --- the cluster file -------------------------------------------------------


def test_cluster_toml_parses(tmp_path: Path) -> None:
    config = load(toml=CLUSTER_TOML, tmp_path=tmp_path)
    assert config.node_id == 1
    assert config.data_dir == Path("/var/lib/chronik/node1")
    assert config.listen == HostPort("127.0.0.1", 9092)
    assert config.advertise == HostPort("127.0.0.1", 9092)
    assert config.replication_listen == HostPort("127.0.0.1", 9291)
    assert config.metrics_listen == HostPort("127.0.0.1", 9644)
    assert config.peers == (
        Peer(1, HostPort("127.0.0.1", 9092), HostPort("127.0.0.1", 9291)),
        Peer(2, HostPort("127.0.0.1", 9093), HostPort("127.0.0.1", 9292)),
    )
    assert config.metadata_commit == "quorum"
    assert config.to_dict()["peers"] == [
        {"id": 1, "kafka": "127.0.0.1:9092", "replication": "127.0.0.1:9291"},
        {"id": 2, "kafka": "127.0.0.1:9093", "replication": "127.0.0.1:9292"},
    ]


def test_cluster_toml_advertised_and_flat_keys(tmp_path: Path) -> None:
    toml = CLUSTER_TOML + '[advertised]\nkafka = "node1.example:9092"\n'
    assert load(toml=toml, tmp_path=tmp_path).advertise == HostPort("node1.example", 9092)
    flat = 'listen = "127.0.0.1:9100"\nreplication_listen = "127.0.0.1:9300"\nmetrics_listen = "127.0.0.1:9700"\nrack = "r1"\nmetadata_commit = "leader"\n'
    config = load(toml=flat, tmp_path=tmp_path)
    assert (config.listen.port, config.replication_listen.port, config.metrics_listen) == (
        9100, 9300, HostPort("127.0.0.1", 9700)
    )
    assert (config.rack, config.metadata_commit) == ("r1", "leader")


def test_to_dict_is_plain_data(tmp_path: Path) -> None:
    import json

    d = load(toml=CLUSTER_TOML, tmp_path=tmp_path).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["listen"] == "127.0.0.1:9092" and d["data_dir"] == "/var/lib/chronik/node1"


def test_metrics_listen_can_be_turned_off(tmp_path: Path) -> None:
    assert load(["--metrics-listen", "off"], toml=CLUSTER_TOML, tmp_path=tmp_path).metrics_listen is None


def test_ipv6_addresses() -> None:
    assert parse_host_port("[::1]:9092") == HostPort("::1", 9092)
    assert str(HostPort("::1", 9092)) == "[::1]:9092"


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["--listen", "localhost"], {}, r"invalid listen \(flag --listen\): 'localhost' is not HOST:PORT"),
        (["--listen", "localhost:http"], {}, r"listen \(flag --listen\).*port 'http' is not a number"),
        ([], {"CHRONIK_LISTEN": "h:70000"}, r"listen \(environment variable CHRONIK_LISTEN\).*out of range"),
        (["--advertise", "h:-1"], {}, r"advertise \(flag --advertise\)"),
        (["--advertise", "0.0.0.0:9092"], {}, r"advertise \(flag --advertise\).*not an address clients"),
        (["--metrics-listen", "::1:80"], {}, r"metrics_listen.*brackets"),
        (["--replication-listen", ":9291"], {}, r"replication_listen.*not HOST:PORT"),
        ([], {"CHRONIK_NUM_PARTITIONS": "0"}, r"num.partitions \(environment variable CHRONIK_NUM_PARTITIONS\): 0 is below the minimum 1"),
        (["--num-partitions", "three"], {}, r"num.partitions \(flag --num-partitions\): 'three' is not an integer"),
        (["--set", "log.retention.bytes=-2"], {}, r"log.retention.bytes \(flag --set log.retention.bytes\): -2 is below"),
        (["--log-segment-bytes", "100"], {}, r"log.segment.bytes.*below the minimum 1024"),
        (["--message-max-bytes", "-5"], {}, r"message.max.bytes.*below the minimum 0"),
        (["--socket-request-max-bytes", "0"], {}, r"socket.request.max.bytes"),
        (["--log-retention-ms", "-7"], {}, r"log.retention.ms.*-7 is below the minimum -1"),
        (["--replica-socket-timeout-ms", "500"], {}, r"replica.socket.timeout.ms.*500 is below the minimum 1000"),
        (["--auto-create-topics-enable", "yes"], {}, r"auto.create.topics.enable.*'yes' is not true or false"),
        (["--wal-profile", "fast"], {}, r"wal_profile \(flag --wal-profile\): 'fast' is not one of: low-latency, balanced, throughput"),
        (["--wal-backend", "rocks"], {}, r"wal_backend \(flag --wal-backend\): 'rocks' is not one of: " + ", ".join(available_backends())),
        ([], {"CHRONIK_LOG_LEVEL": "verbose"}, r"log_level \(environment variable CHRONIK_LOG_LEVEL\).*debug, info, warning, error"),
        (["--metadata-commit", "async"], {}, r"metadata_commit.*quorum, leader"),
        (["--node-id", "-1"], {}, r"node_id \(flag --node-id\)"),
        (["--data-dir", ""], {}, r"data_dir \(flag --data-dir\): must not be empty"),
        (["--set", "num.partitions"], {}, r"--set 'num.partitions': expected KAFKA.NAME=VALUE"),
        (["--set", "num.partition=3"], {}, r"unknown Kafka setting 'num.partition' \(did you mean 'num.partitions'\?\)"),
        (["--set", "num.partitions=3", "--num-partitions", "4"], {}, r"num.partitions is given twice"),
        (["--peer", "1@h:1"], {}, r"peers \(flag --peer\): '1@h:1' is not ID@KAFKA_HOST:PORT/REPLICATION_HOST:PORT"),
        (["--peer", "1@h:1/h:2", "--peer", "1@h2:1/h2:2"], {}, r"peers \(flag --peer\): duplicate peer id 1"),
        (["--peer", "2@h:1/h:2", "--peer", "3@h2:1/h2:2"], {}, r"peers \(flag --peer\): this node's node_id 1 \(default\) is not among the peer ids \(2, 3\)"),
        (["--peer", "1@0.0.0.0:1/h:2"], {}, r"peer 1: kafka address 0.0.0.0:1 is not one other nodes can connect to"),
        (["--config", "/nonexistent/chronik.toml"], {}, r"config file /nonexistent/chronik.toml \(from flag --config\) does not exist"),
    ],
)
def test_bad_values_from_flags_and_env(argv: list[str], env: dict[str, str], expected: str) -> None:
    assert re.search(expected, config_error(argv=argv, env=env))


@pytest.mark.parametrize(
    "toml, expected",
    [
        ('listen = "nope"\n', r"invalid listen \(config file .*chronik.toml, key listen\): 'nope' is not HOST:PORT"),
        ('[listeners]\nkafka = 9092\n', r"listen \(config file .*, key listeners.kafka\): expected a \"HOST:PORT\" string, got an integer"),
        ('"num.partitions" = "3"\n', r"num.partitions \(config file .*, key num.partitions\): expected an integer, got a string '3'"),
        ('"auto.create.topics.enable" = 1\n', r"auto.create.topics.enable .*expected true or false, got an integer"),
        ('[kafka]\n"message.max.bytes" = true\n', r"message.max.bytes .*key kafka.message.max.bytes\): expected an integer, got a boolean"),
        ('data_dir = 5\n', r"data_dir .*expected a string"),
        ('node_id = 1.5\n', r"node_id .*expected an integer, got a float"),
        ('wal_profile = "slow"\n', r"wal_profile \(config file .*\): 'slow' is not one of"),
        ('listen_addr = "h:1"\n', r"unknown key\(s\): 'listen_addr' \(did you mean 'listen'\?\)"),
        ('num_partitions = 3\n', r"unknown key\(s\): 'num_partitions' \(did you mean 'num.partitions'\?\)"),
        ('[listener]\nkafka = "h:1"\n', r"unknown key\(s\): 'listener.kafka' \(did you mean 'listeners.kafka'\?\)"),
        ('[listeners]\nkafka = "h:1"\nadmin = "h:2"\n', r"unknown key\(s\): 'listeners.admin'"),
        ('listen = "h:1"\n[listeners]\nkafka = "h:2"\n', r"sets listen twice: as listen and as listeners.kafka"),
        ('"num.partitions" = 1\n[kafka]\n"num.partitions" = 2\n', r"sets num.partitions twice"),
        ('listen = "h:1"\nlisten = "h:2"\n', r"is not valid TOML: .*line 2"),
        ('[[peers]]\nid = 1\nkafka = "h:1"\n', r"peers \(config file .*, key peers\): peer #1: missing replication"),
        ('[[peers]]\nid = 1\nkafka = "h:1"\nreplication = "h:2"\nport = 3\n', r"peer #1: unknown key\(s\) port"),
        ('peers = ["1@h:1/h:2"]\n', r"peer #1: expected a table"),
        ('[peers]\nid = 1\n', r"peers .*expected an array of tables \[\[peers\]\]"),
        (CLUSTER_TOML + '[[peers]]\nid = 2\nkafka = "h:1"\nreplication = "h:2"\n', r"duplicate peer id 2"),
        (CLUSTER_TOML.replace("node_id = 1", "node_id = 3"), r"node_id 3 \(config file .*key node_id\) is not among the peer ids \(1, 2\)"),
    ],
)
def test_bad_values_from_file(tmp_path: Path, toml: str, expected: str) -> None:
    assert re.search(expected, config_error(toml=toml, tmp_path=tmp_path))


def test_bad_value_when_constructed_directly() -> None:
    with pytest.raises(ConfigError, match=r"invalid num.partitions \(set directly\): 0 is below the minimum 1"):
        BrokerConfig(num_partitions=0)


def test_unknown_environment_variables_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    load(env={"CHRONIK_NUM_PARTITION": "3", "OTHER": "x"})
    assert "CHRONIK_NUM_PARTITION" in caplog.text and "OTHER" not in caplog.text


# --- --help -----------------------------------------------------------------


def test_help_documents_every_option() -> None:
    text = " ".join(parser().format_help().split())
    for field in dataclasses.fields(BrokerConfig):
        if field.name == "sources":
            continue
        flag = "--peer" if field.name == "peers" else "--" + field.name.replace("_", "-")
        assert flag in text, flag
        assert "CHRONIK_" + field.name.upper() in text, field.name
    for kafka_name in KAFKA_SETTINGS:
        assert f'"{kafka_name}"' in text, kafka_name
    for needle in ("--config", "CHRONIK_CONFIG", "--set", "listeners.kafka", "listeners.replication",
                   "listeners.metrics", "advertised.kafka", "[[peers]]", *COMMIT_PROFILES):
        assert needle in text, needle
    assert "Default: 0.0.0.0:9092" in text and "Default: 1048588" in text


def test_unavailable_native_backend_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import chronik.storage

    monkeypatch.setattr(chronik.storage, "available_backends", lambda: ["python", "memory", "faulty"])
    message = config_error(argv=["--wal-backend", "native"])
    assert "'native' is not one of: python, memory, faulty (the native extension is not built" in message


# --- listeners and security (Kafka's names) ----------------------------------------------------------------


def test_listeners_with_their_protocols_and_advertised_addresses(tmp_path: Path) -> None:
    config = load(["--set", "listeners=PLAINTEXT://0.0.0.0:9092,SSL://:9093,SASL_SSL://127.0.0.1:0,INTERNAL://[::1]:9095",
                   "--set", "advertised.listeners=PLAINTEXT://broker1:9092,SSL://broker1:9093",
                   "--set", "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,"
                            "INTERNAL:SASL_PLAINTEXT",
                   "--set", "ssl.keystore.location=/etc/server.pem"])
    specs = config.kafka_listeners()
    assert [(s.name, str(s.bind), str(s.advertised), s.protocol) for s in specs] == [
        ("PLAINTEXT", "0.0.0.0:9092", "broker1:9092", "PLAINTEXT"),
        ("SSL", ":9093", "broker1:9093", "SSL"),
        ("SASL_SSL", "127.0.0.1:0", "127.0.0.1:0", "SASL_SSL"),
        ("INTERNAL", "[::1]:9095", "[::1]:9095", "SASL_PLAINTEXT"),
    ]
    from_toml = load(toml='listeners = "SSL://127.0.0.1:9093"\n"ssl.keystore.location" = "/k.pem"\n'
                          '[kafka]\n"ssl.client.auth" = "required"\nssl.truststore.location = "/ca.pem"\n', tmp_path=tmp_path)
    assert [s.protocol for s in from_toml.kafka_listeners()] == ["SSL"]
    assert (from_toml.ssl_client_auth, from_toml.ssl_truststore_location) == ("required", "/ca.pem")
    from_env = load(env={"CHRONIK_LISTENERS": "SASL_PLAINTEXT://127.0.0.1:9094",
                         "CHRONIK_SASL_ENABLED_MECHANISMS": "PLAIN"})
    assert [s.sasl for s in from_env.kafka_listeners()] == [True]


def test_without_listeners_one_plaintext_listener_on_listen() -> None:
    config = load(["--listen", "127.0.0.1:9999"])
    assert [(s.name, str(s.bind), str(s.advertised), s.protocol) for s in config.kafka_listeners()] == [
        ("PLAINTEXT", "127.0.0.1:9999", "127.0.0.1:9999", "PLAINTEXT")]


@pytest.mark.parametrize("argv,message", [
    (["--set", "listeners=PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2"], "appears twice"),
    (["--set", "listeners=OTHER://127.0.0.1:1"], "no security protocol"),
    (["--set", "listeners=PLAINTEXT:127.0.0.1:1"], "NAME://HOST:PORT"),
    (["--set", "listeners=PLAINTEXT://127.0.0.1:99999"], "port"),
    (["--set", "listeners=SSL://127.0.0.1:1"], "ssl.keystore.location"),
    (["--set", "listener.security.protocol.map=X:TLS"], "unknown security protocol"),
    (["--set", "advertised.listeners=SSL://h:1"], "not in listeners"),
    (["--set", "listeners=PLAINTEXT://:1", "--set", "advertised.listeners=PLAINTEXT://0.0.0.0:1"], "not an address"),
    (["--set", "ssl.client.auth=required"], "trust store"),
    (["--set", "ssl.enabled.protocols=TLSv1.1"], "unknown TLS version"),
    (["--set", "sasl.enabled.mechanisms=GSSAPI"], "unsupported SASL mechanism"),
])
def test_bad_listener_and_security_settings_name_the_setting(argv: list[str], message: str) -> None:
    error = config_error(argv=argv)
    assert message in error
    assert "flag --set" in error or "default" in error


# --- the replication port's security -------------------------------------------------------------------------


def test_replication_port_mutual_tls_settings(tmp_path: Path) -> None:
    """PLAINTEXT by default; SSL takes the node's key and trust stores, or the replication listener's
    own (Kafka's per-listener form), from flags, --set, the environment or TOML alike."""
    assert load([]).replication_security_protocol == "PLAINTEXT"
    shared = load(["--replication-security-protocol", "SSL", "--set", "ssl.keystore.location=/k.pem",
                   "--set", "ssl.truststore.location=/ca.pem"])
    assert (shared.replication_keystore, shared.replication_truststore) == (
        ("ssl.keystore.location", "/k.pem"), ("ssl.truststore.location", "/ca.pem"))
    assert shared.ssl_endpoint_identification_algorithm == "https"  # Kafka's default
    own = load(env={"CHRONIK_REPLICATION_SECURITY_PROTOCOL": "SSL",
                    "CHRONIK_LISTENER_NAME_REPLICATION_SSL_KEYSTORE_LOCATION": "/node.pem",
                    "CHRONIK_LISTENER_NAME_REPLICATION_SSL_TRUSTSTORE_LOCATION": "/cluster-ca.pem",
                    "CHRONIK_SSL_KEYSTORE_LOCATION": "/client-facing.pem"})
    assert (own.replication_keystore, own.replication_truststore) == (
        ("listener.name.replication.ssl.keystore.location", "/node.pem"),
        ("listener.name.replication.ssl.truststore.location", "/cluster-ca.pem"))
    from_toml = load(toml='replication_security_protocol = "SSL"\n'
                          '"listener.name.replication.ssl.keystore.location" = "/node.pem"\n'
                          '[kafka]\n"listener.name.replication.ssl.truststore.location" = "/ca.pem"\n'
                          '"ssl.endpoint.identification.algorithm" = ""\n', tmp_path=tmp_path)
    assert from_toml.replication_security_protocol == "SSL" and from_toml.ssl_endpoint_identification_algorithm == ""
    assert from_toml.replication_truststore == ("listener.name.replication.ssl.truststore.location", "/ca.pem")


@pytest.mark.parametrize("argv,message", [
    (["--replication-security-protocol", "SSL"], "needs a key store (PEM certificate chain and key): set "
     "listener.name.replication.ssl.keystore.location or ssl.keystore.location"),
    (["--replication-security-protocol", "SSL", "--set", "ssl.keystore.location=/k.pem"],
     "needs a trust store (PEM CAs): set listener.name.replication.ssl.truststore.location or ssl.truststore.location"),
    (["--replication-security-protocol", "SASL_SSL"], "'SASL_SSL' is not one of: PLAINTEXT, SSL"),
    (["--set", "ssl.endpoint.identification.algorithm=http"], "'http' is not one of: https (or empty)"),
])
def test_bad_replication_security_settings_name_the_setting(argv: list[str], message: str) -> None:
    error = config_error(argv=argv)
    assert message in error
    assert "flag --" in error
