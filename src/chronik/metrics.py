"""The broker's Prometheus metrics, in one registry per broker.

Naming follows Prometheus conventions: prefix ``chronik_``, base units
(seconds, bytes), ``_total`` on counters.  Labels are kept to small, fixed
sets so that cardinality stays bounded whatever clients do:

* ``api`` -- the Kafka API name ("Produce", "Fetch", ...), about 20 values;
  an API the broker does not know is counted as "unknown", never by the
  number a client sent.
* ``error`` -- a Kafka error code name ("NOT_LEADER_OR_FOLLOWER"), a fixed set.

No per-topic, per-partition or per-client labels: those belong in logs or in
a future opt-in exporter.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["BATCH_APPENDS_BUCKETS", "BATCH_BYTES_BUCKETS", "BrokerMetrics", "LATENCY_BUCKETS"]

#: 0.1 ms .. 10 s, roughly three per decade.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)
#: Appends per group commit: powers of two up to the largest profile's batch.
BATCH_APPENDS_BUCKETS = tuple(float(2**n) for n in range(0, 17))
#: Bytes per group commit: 4 KiB .. 64 MiB, powers of four.
BATCH_BYTES_BUCKETS = tuple(float(4096 * 4**n) for n in range(0, 8))


class BrokerMetrics:
    """Every metric the broker updates, registered in :attr:`registry`.

    The attributes are plain prometheus-client metrics; the ``record_*``
    helpers exist where one event updates several of them.  Updating a metric
    never blocks (prometheus-client uses a short lock), so it is fine on the
    event-loop thread.

    ``process_metrics`` adds the standard process/platform/GC collectors
    (``process_resident_memory_bytes``, open fds, ...) to this registry.
    """

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

        # Requests (one per Kafka request, whatever the API)
        self.requests = Counter("chronik_requests_total", "Kafka requests handled.", ["api"], registry=r)
        self.request_errors = Counter(
            "chronik_request_errors_total",
            "Kafka requests whose response carried an error, by API and Kafka error name "
            "(a response with several partition errors counts each distinct error once).",
            ["api", "error"],
            registry=r,
        )
        self._per_api: dict[str, tuple[Counter, Histogram]] = {}
        self.request_duration = Histogram(
            "chronik_request_duration_seconds",
            "Time from a request's arrival to its response being queued for sending "
            "(includes waiting for durability and Fetch long-poll).",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # Data in and out
        self.bytes_in = Counter("chronik_bytes_in_total", "Record-batch bytes accepted by Produce.", registry=r)
        self.bytes_out = Counter("chronik_bytes_out_total", "Record-batch bytes returned by Fetch.", registry=r)
        self.records_appended = Counter(
            "chronik_records_appended_total", "Records appended to partition logs.", registry=r
        )
        self.produce_duration = Histogram(
            "chronik_produce_append_duration_seconds",
            "Time from appending one partition's batch to it being durable (group-commit wait included).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fetch_duration = Histogram(
            "chronik_fetch_read_duration_seconds",
            "Time reading the log for one Fetch request, not counting the long-poll wait for new data.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # Write-ahead log / group commit
        self.wal_syncs = Counter("chronik_wal_syncs_total", "Group commits (one writev + fdatasync each).", registry=r)
        self.wal_sync_appends = Histogram(
            "chronik_wal_sync_batch_appends",
            "Appends made durable by one group commit.",
            buckets=BATCH_APPENDS_BUCKETS,
            registry=r,
        )
        self.wal_sync_bytes = Histogram(
            "chronik_wal_sync_batch_bytes",
            "Bytes written by one group commit.",
            buckets=BATCH_BYTES_BUCKETS,
            registry=r,
        )
        self.wal_sync_duration = Histogram(
            "chronik_wal_sync_duration_seconds",
            "Time of one group commit's writev + fdatasync.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.wal_sync_polling = Gauge(
            "chronik_wal_sync_polling",
            "1 while the hand-offs to the WAL's sync thread poll instead of sleeping (low-latency profile, "
            "native backend, and polling measurably pays on this machine); it costs CPU while commits run.",
            registry=r,
        )

        # State
        self.partitions = Gauge("chronik_partitions", "Partitions hosted by this broker.", registry=r)
        self.connections = Gauge("chronik_connections", "Open Kafka client connections.", registry=r)
        self.sasl_reauthentications = Counter(
            "chronik_sasl_reauthentications_total",
            "SASL sessions renewed on their connection before they expired (KIP-368, connections.max.reauth.ms).",
            registry=r)
        self.expired_connections_killed = Counter(
            "chronik_expired_connections_killed_total",
            "Connections closed because a request came after their SASL session expired, without a "
            "re-authentication (Kafka's expired-connections-killed-count).",
            registry=r)
        self.log_dir_failed = Gauge(
            "chronik_log_dir_failed",
            "1 when the log directory has failed (a write or fsync error); the broker no longer accepts writes.",
            registry=r,
        )

        # Replication (cluster mode; zero on a single node)
        self.partitions_led = Gauge("chronik_partitions_led", "Partitions this broker leads.", registry=r)
        # Log cleaner (compaction)
        self.cleaner_runs = Counter("chronik_log_cleaner_runs_total", "Cleaning passes completed.", registry=r)
        self.cleaner_bytes_read = Counter(
            "chronik_log_cleaner_bytes_read_total", "Bytes of record batches the log cleaner read and rewrote.", registry=r)
        self.cleaner_bytes_written = Counter(
            "chronik_log_cleaner_bytes_written_total", "Bytes of record batches the log cleaner kept.", registry=r)
        self.cleaner_last_ratio = Gauge(
            "chronik_log_cleaner_last_ratio", "Bytes written / bytes read of the last cleaning pass.", registry=r)
        self.cleaner_duration = Histogram(
            "chronik_log_cleaner_pass_duration_seconds", "Time a cleaning pass took (map, rewrite, swap).",
            buckets=LATENCY_BUCKETS, registry=r)
        self.cleaner_dirtiest_ratio = Gauge(
            "chronik_log_cleaner_max_dirty_ratio",
            "Highest dirty ratio over the compacted partitions, as of the cleaner's last look.", registry=r)
        self.cleaner_uncleanable = Gauge(
            "chronik_log_cleaner_uncleanable_partitions",
            "Partitions a cleaning pass failed on (named in the broker log); not retried until restart.", registry=r)
        self.cleaner_errors = Counter(
            "chronik_log_cleaner_errors_total", "Cleaning passes that failed.", registry=r)
        self.under_replicated = Gauge(
            "chronik_under_replicated_partitions",
            "Partitions this broker leads whose ISR is smaller than their replica list.",
            registry=r,
        )
        self.isr_shrinks = Counter(
            "chronik_isr_shrinks_total", "ISR changes removing a follower, committed by this broker as leader.", registry=r
        )
        self.isr_expands = Counter(
            "chronik_isr_expands_total", "ISR changes adding a follower, committed by this broker as leader.", registry=r
        )
        self.replication_max_lag = Gauge(
            "chronik_replication_max_lag_records",
            "Largest lag, in records (leader's log end - own log end, as of the last fetch), "
            "over the partitions this broker follows.",
            registry=r,
        )
        self.replication_lag = Gauge(
            "chronik_replication_lag_records",
            "Sum of the lags, in records, of the partitions this broker follows.",
            registry=r,
        )
        self.follower_max_lag_seconds = Gauge(
            "chronik_replication_follower_max_lag_seconds",
            "Largest time since a follower was last caught up (its fetch reached the leader's log end, "
            "or where that end was at its previous fetch; Kafka's lastCaughtUpTime), over the followers "
            "of the partitions this broker leads.  A follower leaves the ISR past replica.lag.time.max.ms.",
            registry=r,
        )
        self.replication_bytes_in = Counter(
            "chronik_replication_bytes_in_total", "Record-batch bytes this broker fetched from leaders as a follower.",
            registry=r,
        )
        self.replication_bytes_out = Counter(
            "chronik_replication_bytes_out_total", "Record-batch bytes this broker sent to followers as a leader.",
            registry=r,
        )

    def record_request(self, api: str, seconds: float, errors: frozenset[str] | set[str] = frozenset()) -> None:
        """One finished request: count it, its latency, and each distinct error name in its response."""
        children = self._per_api.get(api)
        if children is None:  # looking a labelled child up costs as much as updating it: once per API
            children = self._per_api[api] = (self.requests.labels(api), self.request_duration.labels(api))
        children[0].inc()
        children[1].observe(seconds)
        for error in errors:
            self.request_errors.labels(api, error).inc()

    def record_cleaner_pass(self, bytes_read: int, bytes_written: int, seconds: float) -> None:
        """One cleaning pass read ``bytes_read`` and kept ``bytes_written`` bytes in ``seconds``."""
        self.cleaner_runs.inc()
        self.cleaner_bytes_read.inc(bytes_read)
        self.cleaner_bytes_written.inc(bytes_written)
        self.cleaner_last_ratio.set(bytes_written / bytes_read if bytes_read else 1.0)
        self.cleaner_duration.observe(seconds)

    def record_wal_sync(self, appends: int, nbytes: int, seconds: float) -> None:
        """One group commit made ``appends`` appends (``nbytes`` bytes) durable in ``seconds``."""
        self.wal_syncs.inc()
        self.wal_sync_appends.observe(appends)
        self.wal_sync_bytes.observe(nbytes)
        self.wal_sync_duration.observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus text format (what ``GET /metrics`` serves)."""
        return generate_latest(self.registry)
