"""A Jepsen-style check of transactions under crashes (kill -9 of the broker).

Several transactional producers (confluent-kafka) run transactions over
several partitions, committing most and aborting some, while a read_committed
consumer reads along and the broker is killed with SIGKILL and restarted at
random moments (so also between a decision and its markers).  Every
transaction's outcome as its producer saw it is noted: committed (commit
returned), aborted (abort returned) or unknown (the producer failed in
between).  Then a final read_committed read of everything is checked, with the
concurrent reads, by :func:`tests.txn.history.check` (shared with the wired
cluster simulation, which runs the same checks on every seed): aborted reads
(G1a), lost committed writes, partial transactions, duplicates, records out of
the order written, non-monotonic offsets, uncommitted reads (of a transaction
never committed, or read before its writer asked to commit it: each writer
notes that before sending EndTxn).

The counts are printed (``-s`` shows them) and every anomaly count must be 0.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import confluent_kafka

from ..txn.history import History, check
from .brokerproc import BrokerProcess
from .clients import confluent_read_all, create_topic, end_transaction

TOPIC = "jepsen"
PARTITIONS = 4


class Writer(threading.Thread):
    def __init__(self, bootstrap: str, name: str, history: History, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.name_, self.history, self.stop = bootstrap, name, history, stop
        self.rng = random.Random(seed)
        self.errors: list[str] = []

    def producer(self) -> confluent_kafka.Producer:
        while True:
            producer = confluent_kafka.Producer({
                "bootstrap.servers": self.bootstrap, "transactional.id": self.name_, "linger.ms": 2,
                "transaction.timeout.ms": 10000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 300,
                "retry.backoff.ms": 50})
            try:
                producer.init_transactions(10)
                return producer
            except confluent_kafka.KafkaException as exc:
                self.errors.append(f"init: {exc}")
                time.sleep(0.3)

    def run(self) -> None:
        producer = self.producer()
        k = 0
        while not self.stop.is_set():
            txn = f"{self.name_}-{k}"
            k += 1
            values = [f"{txn}-{i}".encode() for i in range(self.rng.randint(1, 8))]
            commit = self.rng.random() < 0.75
            with self.history.lock:
                self.history.attempted[txn] = values
            try:
                producer.begin_transaction()
                for value in values:
                    producer.produce(TOPIC, value, partition=self.rng.randrange(PARTITIONS))
                # the records reach the log before the decision (an abort would drop unsent ones), and the
                # transaction stays open a moment longer: the reader has something it must not see
                producer.flush(10)
                time.sleep(self.rng.uniform(0, 0.02))
                if commit:  # noted before EndTxn is sent: no read of it may come earlier
                    with self.history.lock:
                        self.history.commit_requested.setdefault(txn, len(self.history.observed))
                end_transaction(producer, commit)
                outcome = "committed" if commit else "aborted"
            except confluent_kafka.KafkaException as exc:
                self.errors.append(f"{txn}: {exc}")
                outcome = "unknown"
                error = exc.args[0]
                if error.txn_requires_abort():
                    try:
                        producer.abort_transaction(10)
                        outcome = "aborted"
                    except confluent_kafka.KafkaException:
                        producer = self.producer()
                else:
                    producer = self.producer()  # fences (and so aborts) whatever the old one left open
            with self.history.lock:
                self.history.outcome[txn] = outcome


class Reader(threading.Thread):
    def __init__(self, bootstrap: str, history: History, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.history, self.stop = bootstrap, history, stop

    def run(self) -> None:
        consumer = confluent_kafka.Consumer({"bootstrap.servers": self.bootstrap, "group.id": "jepsen-reader",
                                             "enable.auto.commit": False, "isolation.level": "read_committed",
                                             "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 300})
        consumer.assign([confluent_kafka.TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        try:
            while not self.stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                with self.history.lock:
                    self.history.observed.append((message.partition(), message.offset(), message.value()))
        finally:
            consumer.close()


def test_transactions_under_crashes(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    history = History()
    stop = threading.Event()
    rng = random.Random(1313)
    writers = [Writer(broker.bootstrap, f"w{i}", history, stop, seed=i) for i in range(3)]
    reader = Reader(broker.bootstrap, history, stop)
    for thread in (*writers, reader):
        thread.start()
    crashes = 0
    for _ in range(3):
        time.sleep(rng.uniform(1.5, 3.0))
        broker.restart(crash=True)
        crashes += 1
    time.sleep(2.0)
    stop.set()
    for writer in writers:
        writer.join(60)
        assert not writer.is_alive()
    reader.join(30)
    # transactions a writer left open when it stopped are aborted at their timeout at the latest
    final = confluent_read_all(broker.bootstrap, TOPIC, PARTITIONS, "read_committed", timeout=40)
    anomalies = check(history, final)
    outcomes = Counter(history.outcome.values())
    print(f"\ntransactions: {len(history.attempted)} ({dict(outcomes)}), crashes: {crashes}, "
          f"records read concurrently: {len(history.observed)}, anomalies: {anomalies}")
    assert outcomes["committed"] > 10 and outcomes["aborted"] > 0
    assert all(n == 0 for n in anomalies.values()), anomalies
