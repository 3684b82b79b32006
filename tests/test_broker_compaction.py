"""The broker's wiring of compaction: retention by cleanup.policy, the cleaner's metrics."""

from __future__ import annotations

import time
from pathlib import Path

from chronik.broker import TopicRequest, open_broker
from chronik.config import BrokerConfig
from chronik.protocol import Record, encode_batch, validate_batch

OLD = 1_000_000  # ms: long expired for retention.ms=1


async def test_retention_spares_compact_only_topics_and_cleaner_passes_are_counted(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path, wal_backend="memory")
    async with open_broker(config) as broker:
        logs = {}
        for name, policy in (("compact-only", "compact"), ("both", "compact,delete")):
            await broker.create_topic(TopicRequest(name, 1, 1, {
                "cleanup.policy": policy, "retention.ms": "1", "segment.bytes": "1024",
                "min.cleanable.dirty.ratio": "0.01"}))
            log = await broker.partition_log(name, 0)
            assert log is not None
            for i in range(40):
                batch = encode_batch([Record(0, OLD, b"key-%d" % (i % 4), b"value %d" % i + b"." * 100)])
                info = log.append_batch(batch, validate_batch(batch), log_append_time=None)
            await log.wait_durable(info)
            logs[name] = log
        assert broker.apply_retention() > 0
        assert logs["compact-only"].log_start_offset == 0  # compact alone: every key's value stays, whatever its age
        assert logs["both"].log_start_offset > 0  # compact,delete: retention deletes old segments too
        candidates = broker.cleaner.candidates(int(time.time() * 1000))
        assert [c.log.topic for c in candidates] == ["compact-only"]
        assert await broker.cleaner.clean(candidates[0])
        metrics = broker.metrics.render().decode()
        assert "chronik_log_cleaner_runs_total 1.0" in metrics
        assert "chronik_log_cleaner_uncleanable_partitions 0.0" in metrics
        read = float(next(line.split()[1] for line in metrics.splitlines()
                          if line.startswith("chronik_log_cleaner_bytes_read_total")))
        written = float(next(line.split()[1] for line in metrics.splitlines()
                             if line.startswith("chronik_log_cleaner_bytes_written_total")))
        assert 0 < written < read
