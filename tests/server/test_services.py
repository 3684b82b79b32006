"""The assembled node offers every service the listener and the handlers are typed against."""

from __future__ import annotations

from pathlib import Path

from chronik.broker import open_broker
from chronik.config import BrokerConfig
from chronik.handlers.services import BrokerServices
from chronik.server.kafka import KafkaServices


async def test_the_broker_offers_what_the_listener_and_the_handlers_use(tmp_path: Path) -> None:
    async with open_broker(BrokerConfig(data_dir=tmp_path, wal_backend="memory")) as broker:
        assert isinstance(broker, BrokerServices)
        assert isinstance(broker, KafkaServices)


def test_something_lacking_a_service_is_not_one() -> None:
    class Partial:
        node_id = 1

    assert not isinstance(Partial(), BrokerServices)
