"""Features this broker does not support yet tell the operator, not only the client."""

from __future__ import annotations

import confluent_kafka
import pytest

from .brokerproc import BrokerProcess


def test_a_transactional_producer_is_logged_once_naming_transactions(broker: BrokerProcess) -> None:
    """Until transactions land, a transactional producer fails (or times out retrying) on the client;
    the broker log says why, once per client rather than once per retry."""
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx-1",
                                         "client.id": "the-tx-client"})
    with pytest.raises(confluent_kafka.KafkaException):
        producer.init_transactions(5)
    line = broker.wait_for_log(r"client 'the-tx-client' from 127\.0\.0\.1 uses transactions")
    assert "does not support" in line and "tx-1" in line, line
    assert sum("uses transactions" in l for l in broker.log_lines) == 1, broker.output()
