"""Transactions benchmark: transactional produce vs plain, read_committed vs read_uncommitted, EndTxn latency.

Run:  python bench/transactions.py [--transactions 300] [--records 100] [--bootstrap HOST:PORT] [--json out.json]

Without ``--bootstrap`` the script starts its own ``python -m chronik serve``
(fresh data directory, port 0) and stops it at the end.  Clients are
confluent-kafka (librdkafka), one partition, 100-byte values.

Workloads:

  produce-plain   the same number of records from an idempotent producer
                  (acks=all), no transactions: msg/s (the baseline).  The
                  producer is warmed up (one record) before the clock starts,
                  as the transactional one is (init_transactions): before
                  that, its ~0.5 s start-up was most of the measured time.
  produce-txn     ``--transactions`` transactions of ``--records`` records
                  each (begin, produce, flush, commit): txn/s and msg/s.
                  Target: msg/s >= 0.7 x produce-plain.
  end-txn         commit_transaction() after the records are flushed (so it
                  is the EndTxn round trip: the decision durable; markers follow):
                  p50 / p99.
  consume-rc      a read_committed consumer reads the transactional topic
                  (every 4th transaction is aborted, so the client drops
                  those records): log offsets/s (records delivered differ
                  between the two, the log read is the same).
                  Target: >= 0.9 x consume-ru.
  consume-ru      the same topic read_uncommitted: offsets/s.

Prints one table (workload, result, target, met?) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import confluent_kafka  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from stats import Row, percentile_ms, report  # noqa: E402

from tests.integration.brokerproc import BrokerProcess  # noqa: E402

VALUE = b"v" * 100


def create(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)


def produce_plain(bootstrap: str, count: int) -> float:
    create(bootstrap, "bench-plain")
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2})
    # warm up outside the clock, as produce_txn's init_transactions is: an idempotent producer's
    # start (connections, metadata, InitProducerId) takes ~0.5 s, most of 30,000 records' time
    producer.produce("bench-plain", VALUE, partition=0)
    producer.flush(30)
    started = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                producer.produce("bench-plain", VALUE, partition=0)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)
    return count / (time.perf_counter() - started)


def produce_txn(bootstrap: str, transactions: int, records: int) -> tuple[float, float, list[float]]:
    create(bootstrap, "bench-txn")
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "transactional.id": "bench", "linger.ms": 2})
    producer.init_transactions(20)
    end_txn: list[float] = []
    started = time.perf_counter()
    for t in range(transactions):
        producer.begin_transaction()
        for _ in range(records):
            producer.produce("bench-txn", VALUE, partition=0)
        producer.flush(60)
        committing = time.perf_counter()
        if t % 4 == 3:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
        end_txn.append(time.perf_counter() - committing)
    elapsed = time.perf_counter() - started
    return transactions / elapsed, transactions * records / elapsed, end_txn


def consume(bootstrap: str, isolation: str) -> tuple[float, int]:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{isolation}",
                                         "enable.auto.commit": False, "isolation.level": isolation,
                                         "fetch.wait.max.ms": 10})
    tp = confluent_kafka.TopicPartition("bench-txn", 0, 0)
    end = consumer.get_watermark_offsets(tp, timeout=10)[1]
    consumer.assign([tp])
    got = 0
    started = time.perf_counter()
    while True:
        messages = consumer.consume(1000, 0.2)
        got += sum(1 for m in messages if m.error() is None)
        (position,) = consumer.position([tp])
        if position.offset >= end:
            break
    elapsed = time.perf_counter() - started
    consumer.close()
    return end / elapsed, got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--records", type=int, default=100, help="records per transaction")
    parser.add_argument("--bootstrap", help="measure this broker instead of starting one")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = BrokerProcess(Path(tempfile.mkdtemp(prefix="chronik-bench-txn-")) / "data").start()
        bootstrap = broker.bootstrap
    rows: list[Row] = []
    try:
        plain = produce_plain(bootstrap, args.transactions * args.records)
        txn_rate, txn_msgs, end_txn = produce_txn(bootstrap, args.transactions, args.records)
        rc, rc_count = consume(bootstrap, "read_committed")
        ru, ru_count = consume(bootstrap, "read_uncommitted")
    finally:
        if broker is not None:
            broker.stop()
    rows.append(Row("produce-plain", f"{plain:,.0f} msg/s", "baseline", None, {"msg_per_s": plain}))
    rows.append(Row("produce-txn", f"{txn_rate:,.1f} txn/s, {txn_msgs:,.0f} msg/s ({txn_msgs / plain:.2f}x plain)",
                    ">= 0.7x plain", txn_msgs >= 0.7 * plain, {"txn_per_s": txn_rate, "msg_per_s": txn_msgs}))
    p50, p99 = percentile_ms(end_txn, 0.5), percentile_ms(end_txn, 0.99)
    rows.append(Row("end-txn", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", "-", None, {"p50_ms": p50 or 0, "p99_ms": p99 or 0}))
    rows.append(Row("consume-rc", f"{rc:,.0f} offsets/s ({rc_count} records, {rc / ru:.2f}x read_uncommitted)",
                    ">= 0.9x ru", rc >= 0.9 * ru, {"offsets_per_s": rc, "records": rc_count}))
    rows.append(Row("consume-ru", f"{ru:,.0f} offsets/s ({ru_count} records)", "baseline", None,
                    {"offsets_per_s": ru, "records": ru_count}))
    return report(rows, args.json, workload_width=16, result_width=64)


if __name__ == "__main__":
    sys.exit(main())
