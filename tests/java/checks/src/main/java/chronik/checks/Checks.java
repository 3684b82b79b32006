package chronik.checks;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.clients.admin.RaftVoterEndpoint;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Apache Kafka's Java client against a running Chronik broker (or cluster).
 *
 * <pre>java -cp ... chronik.checks.Checks SCENARIO BOOTSTRAP [REPLICATION_FACTOR]</pre>
 *
 * Scenarios: roundtrip, idempotent, groups, admin, transactions, failover.  Each does real work over real
 * sockets, checks what it got back, and prints one JSON object as its last stdout line:
 * {"scenario", "client", "ok", "failures": [...], ...details}.  The exit status is 0 when every
 * check passed, 1 when one failed (each failure is also printed to stderr as "FAILED: ..."), 2 on
 * bad usage.  The client's own log lines (slf4j-simple) go to stderr.  tests/integration/test_java.py
 * runs it once per scenario and client version.
 *
 * <p>Client settings beyond bootstrap.servers (security.protocol, sasl.*, ssl.*) come from the
 * properties file named by the system property chronik.client.config, for every client made.
 * Security scenarios (tests/integration/test_java_security.py): secure (create a topic, produce,
 * consume in a group, commit), authfail (admin, producer and consumer with refused credentials:
 * the exception each surfaces), reauth (produce and consume for chronik.seconds seconds on the same
 * connections; the clients' re-authentication and connection metrics).
 *
 * <p>failover is interactive: it produces to and consumes every partition of an existing topic
 * (named by its fourth argument) until stdin says "stop"; it prints "READY" once every partition
 * took a write, and after a "mark" line prints "WRITABLE seconds" once every partition took a
 * record sent after the mark and the consumer read one.  At the end every acknowledged record
 * must have been consumed at the offset it was acknowledged at.
 */
public final class Checks {
    private static final long T0 = 1_700_000_000_000L;
    private static final String RUN = Long.toString(System.currentTimeMillis(), 36) + "-" + new Random().nextInt(1 << 20);
    private static final Duration POLL = Duration.ofMillis(100);
    private static final int TIMEOUT_S = 30;

    private static final List<String> failures = new ArrayList<>();
    private static final Map<String, Object> result = new LinkedHashMap<>();
    private static String bootstrap;
    private static String scenario;
    private static short replicationFactor = 1;

    private Checks() {
    }

    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: Checks SCENARIO BOOTSTRAP [REPLICATION_FACTOR] [TOPIC]");
            System.exit(2);
        }
        scenario = args[0];
        bootstrap = args[1];
        if (args.length > 2) {
            replicationFactor = Short.parseShort(args[2]);
        }
        result.put("scenario", scenario);
        result.put("client", clientVersion());
        try {
            switch (scenario) {
                case "roundtrip": roundTrip(); break;
                case "idempotent": idempotent(); break;
                case "groups": groups(); break;
                case "admin": admin(); break;
                case "transactions": transactions(); break;
                case "failover": failover(args.length > 3 ? args[3] : "failover"); break;
                case "secure": secure(); break;
                case "authfail": authFailure(); break;
                case "reauth": reauth(Double.parseDouble(System.getProperty("chronik.seconds", "7"))); break;
                default:
                    System.err.println("unknown scenario " + scenario);
                    System.exit(2);
            }
        } catch (Throwable t) {
            t.printStackTrace();
            failures.add("exception: " + t);
        }
        for (String failure : failures) {
            System.err.println("FAILED: " + failure);
        }
        result.put("ok", failures.isEmpty());
        result.put("failures", failures);
        System.out.println(Json.write(result));
        System.out.flush();
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    // ---------------------------------------------------------------- helpers

    /** kafka-clients' version, from the properties file its jar carries. */
    static String clientVersion() {
        Properties p = new Properties();
        try (java.io.InputStream in = KafkaProducer.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            p.load(in);
        } catch (Exception e) {
            return "unknown";
        }
        return p.getProperty("version", "unknown");
    }

    static boolean check(boolean condition, String what, Object... detail) {
        if (!condition) {
            failures.add(detail.length == 0 ? what : what + ": " + Arrays.deepToString(detail));
        }
        return condition;
    }

    static Properties common(String role) {
        Properties p = new Properties();
        String config = System.getProperty("chronik.client.config");
        if (config != null) {
            try (java.io.Reader in = java.nio.file.Files.newBufferedReader(java.nio.file.Path.of(config))) {
                p.load(in);
            } catch (java.io.IOException e) {
                throw new IllegalStateException("cannot read chronik.client.config " + config, e);
            }
        }
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "chronik-checks-" + scenario + "-" + role);
        return p;
    }

    static Admin newAdmin() {
        Properties p = common("admin");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        return Admin.create(p);
    }

    static KafkaProducer<byte[], byte[]> producer(Object... settings) {
        Properties p = common("producer");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        for (int i = 0; i < settings.length; i += 2) {
            p.put(settings[i], settings[i + 1]);
        }
        return new KafkaProducer<>(p);
    }

    /** A consumer reading from the earliest offset, committing only when told; short heartbeats. */
    static KafkaConsumer<byte[], byte[]> consumer(String group, Object... settings) {
        Properties p = common("consumer");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10000);
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 200);
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 100);
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        for (int i = 0; i < settings.length; i += 2) {
            p.put(settings[i], settings[i + 1]);
        }
        return new KafkaConsumer<>(p);
    }

    static void createTopic(Admin admin, String name, int partitions, Map<String, String> configs) throws Exception {
        admin.createTopics(List.of(new NewTopic(name, partitions, replicationFactor).configs(configs)))
            .all().get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    static <T> T get(KafkaFuture<T> future) throws Exception {
        return future.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** The exception a future failed with, or null if it succeeded. */
    static Throwable failureOf(KafkaFuture<?> future) throws Exception {
        try {
            future.get(TIMEOUT_S, TimeUnit.SECONDS);
            return null;
        } catch (ExecutionException e) {
            return e.getCause();
        }
    }

    static void waitFor(BooleanSupplier condition, long timeoutMs, String what) {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (!condition.getAsBoolean()) {
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("timed out after " + timeoutMs + " ms waiting for " + what);
            }
        }
    }

    /** Poll until ``count`` records arrived (more are kept too), then 300 ms more to catch extras. */
    static List<ConsumerRecord<byte[], byte[]>> readAtLeast(KafkaConsumer<byte[], byte[]> consumer, int count) {
        List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000L;
        while (got.size() < count && System.currentTimeMillis() < deadline) {
            consumer.poll(POLL).forEach(got::add);
        }
        long extra = System.currentTimeMillis() + 300;
        while (System.currentTimeMillis() < extra) {
            consumer.poll(POLL).forEach(got::add);
        }
        return got;
    }

    static String sha256(byte[] data) {
        if (data == null) {
            return null;
        }
        try {
            StringBuilder out = new StringBuilder();
            for (byte b : MessageDigest.getInstance("SHA-256").digest(data)) {
                out.append(String.format("%02x", b));
            }
            return out.toString();
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static List<Object> headerList(Iterable<Header> headers) {
        List<Object> out = new ArrayList<>();
        for (Header h : headers) {
            out.add(Arrays.asList(h.key(), h.value() == null ? null : Arrays.toString(h.value())));
        }
        return out;
    }

    // ---------------------------------------------------------------- roundtrip

    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};

    /**
     * One partition per codec: keys, null and empty keys and values, repeated/empty/null/binary
     * headers, explicit timestamps, 40 small compressible records, a 1 MB random and a 1 MB
     * compressible record.  A consumer reads every record back byte for byte; the RecordMetadata
     * of each send has the offset and timestamp the consumer then sees.  Also a LogAppendTime
     * topic, and seek by timestamp (offsetsForTimes).
     */
    static void roundTrip() throws Exception {
        String topic = "java-rt-" + RUN;
        Random random = new Random(42);
        try (Admin admin = newAdmin()) {
            createTopic(admin, topic, CODECS.length, Map.of());
        }
        List<ProducerRecord<byte[], byte[]>> sent = new ArrayList<>();
        List<RecordMetadata> acks = new ArrayList<>();
        for (int partition = 0; partition < CODECS.length; partition++) {
            String codec = CODECS[partition];
            List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
            long ts = T0 + partition * 100_000L;
            records.add(new ProducerRecord<>(topic, partition, ts, bytes("k0"), bytes("v0 " + codec)));
            records.add(new ProducerRecord<>(topic, partition, ts + 1, (byte[]) null, bytes("no key")));
            records.add(new ProducerRecord<>(topic, partition, ts + 2, bytes("tombstone"), (byte[]) null));
            records.add(new ProducerRecord<>(topic, partition, ts + 3, new byte[0], new byte[0]));
            byte[] binary = new byte[256];
            for (int i = 0; i < 256; i++) {
                binary[i] = (byte) i;
            }
            List<Header> headers = List.of(new RecordHeader("h", bytes("one")), new RecordHeader("h", bytes("two")),
                new RecordHeader("empty", new byte[0]), new RecordHeader("null", null), new RecordHeader("bin", binary),
                new RecordHeader("ünïcode-ключ", bytes("✓")));
            records.add(new ProducerRecord<>(topic, partition, (Long) (ts + 4), binary, binary, headers));
            for (int i = 0; i < 40; i++) {
                records.add(new ProducerRecord<>(topic, partition, ts + 10 + i, bytes("key-" + i),
                    bytes(("record " + i + " of " + codec + " ").repeat(20)),
                    List.of(new RecordHeader("i", bytes(Integer.toString(i))))));
            }
            records.add(new ProducerRecord<>(topic, partition, ts - 5_000, bytes("earlier timestamp"), bytes("x")));
            byte[] big = new byte[1_000_000];
            random.nextBytes(big);
            records.add(new ProducerRecord<>(topic, partition, ts + 60, bytes("big random"), big));
            records.add(new ProducerRecord<>(topic, partition, ts + 61, bytes("big compressible"),
                bytes("0123456789abcdef".repeat(62_500))));
            records.add(new ProducerRecord<>(topic, partition, ts + 62, bytes("after big"), bytes("last")));
            try (KafkaProducer<byte[], byte[]> producer = producer(
                    ProducerConfig.COMPRESSION_TYPE_CONFIG, codec, ProducerConfig.LINGER_MS_CONFIG, 20)) {
                List<Future<RecordMetadata>> futures = new ArrayList<>();
                for (ProducerRecord<byte[], byte[]> r : records) {
                    futures.add(producer.send(r));
                }
                producer.flush();
                for (Future<RecordMetadata> f : futures) {
                    acks.add(f.get(TIMEOUT_S, TimeUnit.SECONDS));
                }
            }
            sent.addAll(records);
        }
        Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got = new HashMap<>();
        List<TopicPartition> partitions = new ArrayList<>();
        for (int p = 0; p < CODECS.length; p++) {
            partitions.add(new TopicPartition(topic, p));
        }
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(null)) {
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            for (ConsumerRecord<byte[], byte[]> r : readAtLeast(consumer, sent.size())) {
                got.computeIfAbsent(new TopicPartition(r.topic(), r.partition()), k -> new ArrayList<>()).add(r);
            }
        }
        int mismatches = 0;
        int received = 0;
        List<Object> digests = new ArrayList<>();
        Map<Integer, Integer> position = new HashMap<>();
        for (int i = 0; i < sent.size(); i++) {
            ProducerRecord<byte[], byte[]> s = sent.get(i);
            RecordMetadata ack = acks.get(i);
            int index = position.merge(s.partition(), 1, Integer::sum) - 1;
            check(ack.partition() == s.partition() && ack.offset() == index, "acknowledged offset", s.partition(), index, ack.offset());
            check(ack.timestamp() == s.timestamp(), "acknowledged timestamp", ack.timestamp(), s.timestamp());
            List<ConsumerRecord<byte[], byte[]>> inPartition = got.getOrDefault(new TopicPartition(topic, s.partition()), List.of());
            if (!check(index < inPartition.size(), "record not consumed", s.partition(), index)) {
                mismatches++;
                continue;
            }
            ConsumerRecord<byte[], byte[]> r = inPartition.get(index);
            received++;
            boolean same = r.offset() == ack.offset()
                && Arrays.equals(r.key(), s.key()) && Arrays.equals(r.value(), s.value())
                && (r.key() == null) == (s.key() == null) && (r.value() == null) == (s.value() == null)
                && r.timestamp() == s.timestamp() && r.timestampType() == TimestampType.CREATE_TIME
                && headerList(r.headers()).equals(headerList(s.headers()));
            if (!check(same, "record differs", CODECS[s.partition()], r.offset())) {
                mismatches++;
            }
            Map<String, Object> digest = new LinkedHashMap<>();
            digest.put("partition", r.partition());
            digest.put("offset", r.offset());
            digest.put("key", sha256(r.key()));
            digest.put("value", sha256(r.value()));
            digest.put("timestamp", r.timestamp());
            digests.add(digest);
        }
        int consumed = got.values().stream().mapToInt(List::size).sum();
        check(consumed == sent.size(), "consumed count", consumed, sent.size());
        result.put("topic", topic);
        result.put("sent", sent.size());
        result.put("received", received);
        result.put("mismatches", mismatches);
        result.put("digests", digests);
        logAppendTime();
        seekByTimestamp();
    }

    /** A LogAppendTime topic: the broker's time replaces the producer's, in the ack and in the record. */
    static void logAppendTime() throws Exception {
        String topic = "java-lat-" + RUN;
        try (Admin admin = newAdmin()) {
            createTopic(admin, topic, 1, Map.of("message.timestamp.type", "LogAppendTime"));
        }
        long before = System.currentTimeMillis();
        List<RecordMetadata> acks = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = producer(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4")) {
            for (int i = 0; i < 5; i++) {
                acks.add(producer.send(new ProducerRecord<>(topic, 0, T0 + i, null, bytes("lat " + i))).get(TIMEOUT_S, TimeUnit.SECONDS));
            }
        }
        long after = System.currentTimeMillis();
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(null)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = readAtLeast(consumer, 5);
            check(got.size() == 5, "LogAppendTime records", got.size());
            for (int i = 0; i < got.size() && i < 5; i++) {
                ConsumerRecord<byte[], byte[]> r = got.get(i);
                check(r.timestampType() == TimestampType.LOG_APPEND_TIME, "LogAppendTime type", r.timestampType());
                check(r.timestamp() >= before - 1000 && r.timestamp() <= after + 1000, "LogAppendTime is the broker's time", r.timestamp());
                check(acks.get(i).timestamp() == r.timestamp(), "acknowledged LogAppendTime", acks.get(i).timestamp(), r.timestamp());
            }
        }
    }

    /** offsetsForTimes finds the first record at or after a time; seek there reads on from it. */
    static void seekByTimestamp() throws Exception {
        String topic = "java-ts-" + RUN;
        try (Admin admin = newAdmin()) {
            createTopic(admin, topic, 1, Map.of());
        }
        try (KafkaProducer<byte[], byte[]> producer = producer(ProducerConfig.LINGER_MS_CONFIG, 5)) {
            for (int i = 0; i < 10; i++) {
                producer.send(new ProducerRecord<>(topic, 0, T0 + i * 1000L, null, bytes("t" + i)));
            }
            producer.flush();
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(null)) {
            Map<TopicPartition, OffsetAndTimestamp> at = consumer.offsetsForTimes(Map.of(tp, T0 + 4_500L));
            OffsetAndTimestamp found = at.get(tp);
            check(found != null && found.offset() == 5 && found.timestamp() == T0 + 5_000L, "offsetsForTimes(T0+4.5 s)", String.valueOf(found));
            OffsetAndTimestamp first = consumer.offsetsForTimes(Map.of(tp, 0L)).get(tp);
            check(first != null && first.offset() == 0, "offsetsForTimes(0)", String.valueOf(first));
            Map<TopicPartition, OffsetAndTimestamp> none = consumer.offsetsForTimes(Map.of(tp, T0 + 60_000L));
            check(none.get(tp) == null, "offsetsForTimes after the last record", String.valueOf(none.get(tp)));
            consumer.assign(List.of(tp));
            consumer.seek(tp, found == null ? 0 : found.offset());
            List<ConsumerRecord<byte[], byte[]>> got = readAtLeast(consumer, 5);
            check(got.size() == 5 && got.get(0).offset() == 5 && Arrays.equals(got.get(0).value(), bytes("t5")),
                "records read after seeking by timestamp", got.size());
            result.put("offsetForTime", found == null ? null : found.offset());
        }
    }

    // ---------------------------------------------------------------- idempotent

    /**
     * The default producer (idempotent, acks=all, 5 in flight) with small batches to two
     * partitions: every record acknowledged at the next offset in send order, consumed once.
     * A second producer writes partition 2.  (test_java.py then checks the stored batches'
     * producer ids and sequence numbers.)
     */
    static void idempotent() throws Exception {
        String topic = "java-idem-" + RUN;
        try (Admin admin = newAdmin()) {
            createTopic(admin, topic, 3, Map.of());
        }
        int perPartition = 1000;
        Map<Integer, List<Long>> offsets = new TreeMap<>();
        try (KafkaProducer<byte[], byte[]> producer = producer(ProducerConfig.BATCH_SIZE_CONFIG, 512,
                ProducerConfig.LINGER_MS_CONFIG, 0)) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            for (int i = 0; i < perPartition; i++) {
                for (int p = 0; p < 2; p++) {
                    futures.add(producer.send(new ProducerRecord<>(topic, p, null, bytes(p + "-" + i))));
                }
            }
            for (Future<RecordMetadata> f : futures) {
                RecordMetadata m = f.get(TIMEOUT_S, TimeUnit.SECONDS);
                offsets.computeIfAbsent(m.partition(), k -> new ArrayList<>()).add(m.offset());
            }
        }
        try (KafkaProducer<byte[], byte[]> second = producer()) {
            for (int i = 0; i < 10; i++) {
                second.send(new ProducerRecord<>(topic, 2, null, bytes("2-" + i)));
            }
            second.flush();
        }
        for (int p = 0; p < 2; p++) {
            List<Long> expected = new ArrayList<>();
            for (long i = 0; i < perPartition; i++) {
                expected.add(i);
            }
            check(expected.equals(offsets.get(p)), "acknowledged offsets in send order", p);
        }
        List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1), new TopicPartition(topic, 2));
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(null)) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            List<ConsumerRecord<byte[], byte[]>> got = readAtLeast(consumer, 2 * perPartition + 10);
            check(got.size() == 2 * perPartition + 10, "each record exactly once", got.size());
            Map<Integer, Integer> next = new HashMap<>();
            for (ConsumerRecord<byte[], byte[]> r : got) {
                int i = next.merge(r.partition(), 1, Integer::sum) - 1;
                if (!check(r.offset() == i && Arrays.equals(r.value(), bytes(r.partition() + "-" + i)),
                        "record in order", r.partition(), r.offset())) {
                    break;
                }
            }
        }
        result.put("topic", topic);
        result.put("perPartition", perPartition);
    }

    // ---------------------------------------------------------------- transactions

    static KafkaProducer<byte[], byte[]> transactional(String transactionalId) {
        return producer(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId,
            ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 60000, ProducerConfig.LINGER_MS_CONFIG, 0);
    }

    static void sendAll(KafkaProducer<byte[], byte[]> producer, String topic, String prefix, int count) throws Exception {
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            futures.add(producer.send(new ProducerRecord<>(topic, i % 2, null, bytes(prefix + i))));
        }
        for (Future<RecordMetadata> f : futures) {
            f.get(TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    /** Every value of the topic's two partitions, read from the beginning at ``isolation`` until its end offsets. */
    static List<String> readAll(String topic, String isolation) {
        List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(null, ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation)) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
            List<String> values = new ArrayList<>();
            long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000L;
            while (tps.stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp))) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("timed out reading " + topic + " to " + ends);
                }
                consumer.poll(POLL).forEach(r -> values.add(new String(r.value(), StandardCharsets.UTF_8)));
            }
            Collections.sort(values);
            return values;
        }
    }

    static long endOffsetSum(String topic, String isolation) {
        List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(null, ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation)) {
            return consumer.endOffsets(tps).values().stream().mapToLong(Long::longValue).sum();
        }
    }

    static List<String> values(String prefix, int count) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            out.add(prefix + i);
        }
        return out;
    }

    /**
     * The transactional producer and read_committed consumers: a committed transaction, an
     * aborted one, one that also commits a group's offsets (sendOffsetsToTransaction); a
     * transaction left open, during which the last stable offset holds read_committed readers
     * back; then a second producer with the same transactional.id fences the first (whose
     * commitTransaction fails with ProducerFencedException) and aborts its open transaction,
     * and commits its own.  read_uncommitted readers see the aborted records, read_committed
     * readers never do.
     */
    static void transactions() throws Exception {
        String topic = "java-txn-" + RUN;
        String group = "java-txn-group-" + RUN;
        String transactionalId = "java-txn-id-" + RUN;
        try (Admin admin = newAdmin()) {
            createTopic(admin, topic, 2, Map.of());
        }
        List<String> committed = new ArrayList<>();
        List<String> everything = new ArrayList<>();
        KafkaProducer<byte[], byte[]> zombie = transactional(transactionalId);
        try {
            zombie.initTransactions();
            zombie.beginTransaction();
            sendAll(zombie, topic, "commit1-", 10);
            zombie.commitTransaction();
            committed.addAll(values("commit1-", 10));

            zombie.beginTransaction();
            sendAll(zombie, topic, "abort-", 6);
            zombie.abortTransaction();
            everything.addAll(values("abort-", 6));

            zombie.beginTransaction();
            sendAll(zombie, topic, "commit2-", 4);
            Map<TopicPartition, OffsetAndMetadata> offsets = Map.of(
                new TopicPartition(topic, 0), new OffsetAndMetadata(3, "txn"), new TopicPartition(topic, 1), new OffsetAndMetadata(5));
            zombie.sendOffsetsToTransaction(offsets, new ConsumerGroupMetadata(group));
            zombie.commitTransaction();
            committed.addAll(values("commit2-", 4));
            try (Admin admin = newAdmin()) {
                Map<TopicPartition, OffsetAndMetadata> got = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS);
                check(got.equals(offsets), "offsets committed in the transaction", got);
            }

            // an open transaction holds read_committed readers at its first offset
            zombie.beginTransaction();
            sendAll(zombie, topic, "open-", 4);
            everything.addAll(values("open-", 4));
            long lastStable = endOffsetSum(topic, "read_committed");
            long high = endOffsetSum(topic, "read_uncommitted");
            result.put("openTransaction", Map.of("lastStable", lastStable, "highWatermark", high));
            check(readAll(topic, "read_committed").equals(sorted(committed)), "read_committed during an open transaction");

            // a second producer with the same transactional.id fences the first
            try (KafkaProducer<byte[], byte[]> successor = transactional(transactionalId)) {
                successor.initTransactions();
                String fenced = "none";
                try {
                    zombie.commitTransaction();
                } catch (KafkaException e) {
                    fenced = e.getClass().getSimpleName();
                }
                result.put("zombieCommit", fenced);
                successor.beginTransaction();
                sendAll(successor, topic, "successor-", 2);
                successor.commitTransaction();
                committed.addAll(values("successor-", 2));
            }
        } finally {
            zombie.close(Duration.ZERO);
        }
        everything.addAll(committed);
        List<String> readCommitted = readAll(topic, "read_committed");
        List<String> readUncommitted = readAll(topic, "read_uncommitted");
        check(readCommitted.equals(sorted(committed)), "read_committed reads exactly the committed records", readCommitted);
        check(readUncommitted.equals(sorted(everything)), "read_uncommitted reads every record", readUncommitted);
        check(endOffsetSum(topic, "read_committed") == endOffsetSum(topic, "read_uncommitted"),
            "no transaction left open");
        result.put("topic", topic);
        result.put("readCommitted", readCommitted.size());
        result.put("readUncommitted", readUncommitted.size());
        // 5 transactions (the last fenced one aborted by the coordinator), each ended by a marker
        // in both partitions: 30 records + 10 markers
        result.put("endOffsets", endOffsetSum(topic, "read_uncommitted"));
    }

    static List<String> sorted(List<String> values) {
        List<String> out = new ArrayList<>(values);
        Collections.sort(out);
        return out;
    }

    // ---------------------------------------------------------------- groups

    /** Records a consumer's rebalance callbacks. */
    static final class Listener implements ConsumerRebalanceListener {
        final List<Set<Integer>> revoked = new ArrayList<>();
        final List<Set<Integer>> assigned = new ArrayList<>();
        final List<Set<Integer>> lost = new ArrayList<>();

        static Set<Integer> ids(Collection<TopicPartition> partitions) {
            Set<Integer> out = new TreeSet<>();
            partitions.forEach(tp -> out.add(tp.partition()));
            return out;
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            revoked.add(ids(partitions));
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            assigned.add(ids(partitions));
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> partitions) {
            lost.add(ids(partitions));
        }
    }

    static Set<Integer> assignment(KafkaConsumer<byte[], byte[]> consumer) {
        return Listener.ids(consumer.assignment());
    }

    /** Poll every consumer in turn until ``done`` holds. */
    @SafeVarargs
    static void pollUntil(BooleanSupplier done, String what, KafkaConsumer<byte[], byte[]>... consumers) {
        long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000L;
        while (!done.getAsBoolean()) {
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("timed out waiting for " + what);
            }
            for (KafkaConsumer<byte[], byte[]> c : consumers) {
                c.poll(Duration.ofMillis(50));
            }
        }
    }

    @SuppressWarnings("unchecked")
    static void groups() throws Exception {
        String topic = "java-groups-" + RUN;
        try (Admin admin = newAdmin()) {
            createTopic(admin, topic, 4, Map.of());
        }
        produceNumbered(topic, 4, 0, 10);
        commitAndResume(topic);
        Map<String, Object> eager = twoMembers(topic, "eager-" + RUN, RangeAssignor.class.getName());
        Set<Integer> firstRevoked = new TreeSet<>();
        ((List<?>) eager.get("revoked")).forEach(s -> firstRevoked.addAll((Set<Integer>) s));
        check(firstRevoked.equals(Set.of(0, 1, 2, 3)), "eager: the first member gives up every partition", eager);
        result.put("eager", eager);
        Map<String, Object> coop = twoMembers(topic, "coop-" + RUN, CooperativeStickyAssignor.class.getName());
        Set<Integer> coopRevoked = new TreeSet<>();
        ((List<?>) coop.get("revoked")).forEach(s -> coopRevoked.addAll((Set<Integer>) s));
        check(coopRevoked.size() == 2 && coopRevoked.equals(coop.get("second")),
            "cooperative: the first member gives up only the partitions that move", coop);
        result.put("cooperative", coop);
        staticMembership(topic);
    }

    static void produceNumbered(String topic, int partitions, int from, int to) throws Exception {
        try (KafkaProducer<byte[], byte[]> producer = producer(ProducerConfig.LINGER_MS_CONFIG, 5)) {
            for (int i = from; i < to; i++) {
                for (int p = 0; p < partitions; p++) {
                    producer.send(new ProducerRecord<>(topic, p, null, bytes(p + "-" + i)));
                }
            }
            producer.flush();
        }
    }

    /** A member reads everything and commits; after more records, a new member reads exactly the new ones. */
    static void commitAndResume(String topic) throws Exception {
        String group = "resume-" + RUN;
        try (KafkaConsumer<byte[], byte[]> c = consumer(group)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> got = readAtLeast(c, 40);
            check(got.size() == 40, "first member reads 40", got.size());
            c.commitSync();
            Set<TopicPartition> tps = new HashSet<>();
            for (int p = 0; p < 4; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(tps);
            for (TopicPartition tp : tps) {
                OffsetAndMetadata o = committed.get(tp);
                check(o != null && o.offset() == 10, "committed offset", tp, String.valueOf(o));
            }
        }
        produceNumbered(topic, 4, 10, 12);
        try (KafkaConsumer<byte[], byte[]> c = consumer(group)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> got = readAtLeast(c, 8);
            Set<String> seen = new TreeSet<>();
            got.forEach(r -> seen.add(r.partition() + "@" + r.offset()));
            check(seen.equals(Set.of("0@10", "0@11", "1@10", "1@11", "2@10", "2@11", "3@10", "3@11")) && got.size() == 8,
                "resumed member reads exactly the new records", seen);
            result.put("resumed", got.size());
        }
    }

    /** One member takes all four partitions; a second joins and they end with two each. */
    static Map<String, Object> twoMembers(String topic, String group, String assignor) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        Listener l1 = new Listener();
        Listener l2 = new Listener();
        try (KafkaConsumer<byte[], byte[]> c1 = consumer(group, ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor);
             KafkaConsumer<byte[], byte[]> c2 = consumer(group, ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor)) {
            c1.subscribe(List.of(topic), l1);
            pollUntil(() -> assignment(c1).size() == 4, group + ": first member owns all four", c1);
            out.put("first", assignment(c1));
            l1.revoked.clear();
            c2.subscribe(List.of(topic), l2);
            pollUntil(() -> assignment(c1).size() == 2 && assignment(c2).size() == 2, group + ": two partitions each", c1, c2);
            // a few more rounds: a cooperative rebalance takes two, and nothing may move after it
            for (int i = 0; i < 10; i++) {
                c1.poll(Duration.ofMillis(50));
                c2.poll(Duration.ofMillis(50));
            }
            Set<Integer> a1 = assignment(c1);
            Set<Integer> a2 = assignment(c2);
            Set<Integer> union = new TreeSet<>(a1);
            union.addAll(a2);
            check(a1.size() == 2 && a2.size() == 2 && union.size() == 4, group + ": disjoint halves", a1, a2);
            out.put("second", a2);
            out.put("revoked", new ArrayList<>(l1.revoked)); // copies: close() revokes too
            out.put("lost", new ArrayList<>(l1.lost));
            check(l1.lost.isEmpty() && l2.lost.isEmpty(), group + ": no partitions lost", l1.lost, l2.lost);
            try (Admin admin = newAdmin()) {
                ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(group)).describedGroups().get(group));
                out.put("state", d.state().toString());
                out.put("assignor", d.partitionAssignor());
                out.put("members", d.members().size());
            }
        }
        return out;
    }

    /**
     * Two static members (group.instance.id); one stops and a new process with the same
     * instance id takes its place within the session timeout: it gets the same partitions
     * and the other member is not disturbed.
     */
    static void staticMembership(String topic) throws Exception {
        String group = "static-" + RUN;
        Listener l2 = new Listener();
        Map<String, Object> out = new LinkedHashMap<>();
        Object[] settings = {ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, RangeAssignor.class.getName()};
        try (KafkaConsumer<byte[], byte[]> c2 = consumer(group, ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "member-2",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, RangeAssignor.class.getName())) {
            Set<Integer> before;
            try (KafkaConsumer<byte[], byte[]> c1 = consumer(group, ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "member-1",
                    settings[0], settings[1])) {
                c1.subscribe(List.of(topic));
                pollUntil(() -> assignment(c1).size() == 4, "static: first member owns all four", c1);
                c2.subscribe(List.of(topic), l2);
                pollUntil(() -> assignment(c1).size() == 2 && assignment(c2).size() == 2, "static: two partitions each", c1, c2);
                before = assignment(c1);
                try (Admin admin = newAdmin()) {
                    ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(group)).describedGroups().get(group));
                    Set<String> instances = new TreeSet<>();
                    for (MemberDescription m : d.members()) {
                        instances.add(m.groupInstanceId().orElse(""));
                    }
                    check(instances.equals(Set.of("member-1", "member-2")), "static: described instance ids", instances);
                }
            }
            int callbacks = l2.revoked.size() + l2.assigned.size();
            Set<Integer> other = assignment(c2);
            try (KafkaConsumer<byte[], byte[]> again = consumer(group, ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "member-1",
                    settings[0], settings[1])) {
                again.subscribe(List.of(topic));
                pollUntil(() -> !assignment(again).isEmpty(), "static: the restarted member gets its partitions", again, c2);
                for (int i = 0; i < 10; i++) {
                    again.poll(Duration.ofMillis(50));
                    c2.poll(Duration.ofMillis(50));
                }
                check(assignment(again).equals(before), "static: same partitions after the restart", before, assignment(again));
                check(assignment(c2).equals(other) && l2.revoked.size() + l2.assigned.size() == callbacks,
                    "static: the other member was not rebalanced", l2.revoked, l2.assigned);
                out.put("partitions", before);
            }
        }
        result.put("static", out);
    }

    // ---------------------------------------------------------------- admin

    static void admin() throws Exception {
        String topic = "java-admin-" + RUN;
        try (Admin admin = newAdmin()) {
            DescribeClusterResult cluster = admin.describeCluster();
            Collection<Node> nodes = get(cluster.nodes());
            Node controller = get(cluster.controller());
            String clusterId = get(cluster.clusterId());
            check(!nodes.isEmpty() && controller != null && clusterId != null && !clusterId.isEmpty(), "describeCluster", nodes, controller, clusterId);
            result.put("nodes", nodes.size());
            result.put("controller", controller == null ? null : controller.id());
            metadataQuorum(admin, controller == null ? -1 : controller.id());

            createTopic(admin, topic, 3, Map.of("retention.ms", "3600000"));
            Throwable exists = failureOf(admin.createTopics(List.of(new NewTopic(topic, 1, replicationFactor))).all());
            check(exists instanceof TopicExistsException, "create an existing topic", String.valueOf(exists));
            Throwable invalid = failureOf(admin.createTopics(List.of(new NewTopic(topic + "-bad", 1, replicationFactor)
                .configs(Map.of("retention.ms", "soon")))).all());
            check(invalid instanceof InvalidConfigurationException, "create with an invalid config", String.valueOf(invalid));
            check(get(admin.listTopics().names()).contains(topic), "listTopics has the topic");

            get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all());
            TopicDescription described = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
            check(described.partitions().size() == 5, "partitions after createPartitions", described.partitions().size());
            for (TopicPartitionInfo p : described.partitions()) {
                check(p.leader() != null && p.replicas().size() == replicationFactor && p.isr().size() == replicationFactor,
                    "partition leader, replicas and ISR", p);
            }
            result.put("partitions", described.partitions().size());

            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config config = get(admin.describeConfigs(List.of(resource)).all()).get(resource);
            ConfigEntry retention = config.get("retention.ms");
            check(retention != null && "3600000".equals(retention.value()) && !retention.isDefault()
                && retention.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "described retention.ms", String.valueOf(retention));
            ConfigEntry policy = config.get("cleanup.policy");
            check(policy != null && "delete".equals(policy.value()) && policy.isDefault(), "described cleanup.policy", String.valueOf(policy));
            get(admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET)))).all());
            get(admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("max.message.bytes", ""), AlterConfigOp.OpType.DELETE)))).all());
            config = get(admin.describeConfigs(List.of(resource)).all()).get(resource);
            check("7200000".equals(config.get("retention.ms").value()), "retention.ms after SET", config.get("retention.ms"));
            check(config.get("max.message.bytes").isDefault(), "max.message.bytes after SET and DELETE", config.get("max.message.bytes"));
            ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER, Integer.toString(controller == null ? 1 : controller.id()));
            Config brokerConfig = get(admin.describeConfigs(List.of(broker)).all()).get(broker);
            check(brokerConfig.get("message.max.bytes") != null, "broker config has message.max.bytes");

            listOffsetsAndDeleteRecords(admin, topic);
            electLeaders(admin, topic);
            consumerGroups(admin, topic);

            get(admin.deleteTopics(List.of(topic)).all());
            waitFor(() -> {
                try {
                    return !get(admin.listTopics().names()).contains(topic);
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            }, 10_000, "the deleted topic to leave listTopics");
        }
    }

    static void listOffsetsAndDeleteRecords(Admin admin, String topic) throws Exception {
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaProducer<byte[], byte[]> producer = producer()) {
            for (int i = 0; i < 10; i++) {
                long ts = i == 7 ? T0 + 100_000 : T0 + i * 1000L;
                producer.send(new ProducerRecord<>(topic, 0, ts, null, bytes("o" + i))).get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
        Map<String, Object> out = new LinkedHashMap<>();
        Map<String, OffsetSpec> specs = new LinkedHashMap<>();
        specs.put("earliest", OffsetSpec.earliest());
        specs.put("latest", OffsetSpec.latest());
        specs.put("maxTimestamp", OffsetSpec.maxTimestamp());
        specs.put("forTimestamp", OffsetSpec.forTimestamp(T0 + 2_500));
        for (Map.Entry<String, OffsetSpec> spec : specs.entrySet()) {
            ListOffsetsResult.ListOffsetsResultInfo info = get(admin.listOffsets(Map.of(tp, spec.getValue())).partitionResult(tp));
            out.put(spec.getKey(), List.of(info.offset(), info.timestamp()));
        }
        check(out.get("earliest").equals(List.of(0L, -1L)), "listOffsets earliest", out);
        check(out.get("latest").equals(List.of(10L, -1L)), "listOffsets latest", out);
        check(out.get("maxTimestamp").equals(List.of(7L, T0 + 100_000)), "listOffsets max-timestamp", out);
        check(out.get("forTimestamp").equals(List.of(3L, T0 + 3_000)), "listOffsets for a timestamp", out);
        long low = get(admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(4))).lowWatermarks().get(tp)).lowWatermark();
        check(low == 4, "deleteRecords low watermark", low);
        long earliest = get(admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp)).offset();
        check(earliest == 4, "earliest offset after deleteRecords", earliest);
        out.put("afterDeleteRecords", earliest);
        result.put("listOffsets", out);
    }

    /** describeMetadataQuorum (DescribeQuorum): the leader, its epoch and high watermark, each voter (-1: unknown). */
    static void metadataQuorum(Admin admin, int controller) throws Exception {
        QuorumInfo quorum = get(admin.describeMetadataQuorum().quorumInfo());
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("leaderId", quorum.leaderId());
        out.put("leaderEpoch", quorum.leaderEpoch());
        out.put("highWatermark", quorum.highWatermark());
        List<Map<String, Object>> voters = new ArrayList<>();
        for (QuorumInfo.ReplicaState voter : quorum.voters()) {
            Map<String, Object> v = new LinkedHashMap<>();
            v.put("id", voter.replicaId());
            v.put("directoryId", voter.replicaDirectoryId().toString());
            v.put("logEndOffset", voter.logEndOffset());
            v.put("lastFetchTimestamp", voter.lastFetchTimestamp().orElse(-1));
            v.put("lastCaughtUpTimestamp", voter.lastCaughtUpTimestamp().orElse(-1));
            voters.add(v);
        }
        out.put("voters", voters);
        out.put("observers", quorum.observers().size());
        Map<String, List<String>> endpoints = new TreeMap<>();
        for (QuorumInfo.Node node : quorum.nodes().values()) {
            List<String> listeners = new ArrayList<>();
            for (RaftVoterEndpoint endpoint : node.endpoints()) {
                listeners.add(endpoint.name() + "://" + endpoint.host() + ":" + endpoint.port());
            }
            endpoints.put(Integer.toString(node.nodeId()), listeners);
        }
        out.put("endpoints", endpoints);
        check(quorum.leaderId() == controller, "describeMetadataQuorum leader is the controller", quorum.leaderId(), controller);
        check(quorum.highWatermark() > 0 && !quorum.voters().isEmpty(), "describeMetadataQuorum high watermark and voters", quorum);
        result.put("metadataQuorum", out);
    }

    static void electLeaders(Admin admin, String topic) throws Exception {
        TopicPartition tp = new TopicPartition(topic, 0);
        Map<TopicPartition, Optional<Throwable>> elected = get(admin.electLeaders(ElectionType.PREFERRED, Set.of(tp)).partitions());
        Optional<Throwable> outcome = elected.get(tp);
        check(outcome != null && outcome.isPresent() && outcome.get() instanceof ElectionNotNeededException,
            "electLeaders(PREFERRED) for a partition its preferred replica leads", String.valueOf(outcome));
        result.put("electLeaders", outcome == null ? null : outcome.map(t -> t.getClass().getSimpleName()).orElse("elected"));
    }

    static void consumerGroups(Admin admin, String topic) throws Exception {
        String group = "java-admin-group-" + RUN;
        Map<String, Object> out = new LinkedHashMap<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer(group)) {
            c.subscribe(List.of(topic));
            readAtLeast(c, 6); // partition 0 holds offsets 4..9
            c.commitSync();
            ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(group)).describedGroups().get(group));
            check(d.state().toString().equals("Stable") && d.members().size() == 1, "described active group", d.state(), d.members().size());
            int assigned = d.members().iterator().next().assignment().topicPartitions().size();
            check(assigned == 5, "described member assignment", assigned);
            out.put("activeState", d.state().toString());
            out.put("assignor", d.partitionAssignor());
            Set<String> listed = new TreeSet<>();
            for (ConsumerGroupListing l : get(admin.listConsumerGroups().all())) {
                listed.add(l.groupId());
            }
            check(listed.contains(group), "listConsumerGroups has the group", listed);
        }
        ConsumerGroupDescription empty = get(admin.describeConsumerGroups(List.of(group)).describedGroups().get(group));
        check(empty.state().toString().equals("Empty") && empty.members().isEmpty(), "described group after its member left", empty.state());
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        Map<TopicPartition, OffsetAndMetadata> offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        check(offsets.get(p0) != null && offsets.get(p0).offset() == 10, "listConsumerGroupOffsets", offsets);
        get(admin.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(5), p1, new OffsetAndMetadata(0))).all());
        offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        check(offsets.get(p0) != null && offsets.get(p0).offset() == 5, "offset after alterConsumerGroupOffsets", offsets);
        get(admin.deleteConsumerGroupOffsets(group, Set.of(p1)).all());
        offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        check(offsets.get(p1) == null && offsets.get(p0) != null, "offsets after deleteConsumerGroupOffsets", offsets);
        out.put("offsets", offsets.size());
        get(admin.deleteConsumerGroups(List.of(group)).all());
        Set<String> listed = new TreeSet<>();
        for (ConsumerGroupListing l : get(admin.listConsumerGroups().all())) {
            listed.add(l.groupId());
        }
        check(!listed.contains(group), "listConsumerGroups after deleteConsumerGroups", listed);
        Throwable gone = failureOf(admin.deleteConsumerGroups(List.of(group)).all());
        check(gone instanceof GroupIdNotFoundException, "deleting a deleted group", String.valueOf(gone));
        result.put("groups", out);
    }

    // ---------------------------------------------------------------- failover

    static void failover(String topic) throws Exception {
        int partitions;
        try (Admin admin = newAdmin()) {
            partitions = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic).partitions().size();
        }
        Map<String, byte[]> acked = new ConcurrentHashMap<>();
        Map<Integer, Long> lastAckedSentAt = new ConcurrentHashMap<>();
        Map<String, byte[]> consumed = new ConcurrentHashMap<>();
        Map<Integer, Long> lastConsumedAt = new ConcurrentHashMap<>();
        List<String> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        AtomicBoolean stopProducing = new AtomicBoolean();
        AtomicBoolean stopConsuming = new AtomicBoolean();
        final int parts = partitions;
        Thread producing = new Thread(() -> {
            try (KafkaProducer<byte[], byte[]> producer = producer(ProducerConfig.LINGER_MS_CONFIG, 5,
                    ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 5000, ProducerConfig.RETRY_BACKOFF_MS_CONFIG, 50)) {
                long n = 0;
                while (!stopProducing.get()) {
                    for (int p = 0; p < parts; p++) {
                        byte[] value = bytes(p + "-" + n);
                        long sentAt = System.nanoTime();
                        int partition = p;
                        producer.send(new ProducerRecord<>(topic, p, null, value), (m, e) -> {
                            if (e != null) {
                                errors.add(e.toString());
                            } else {
                                acked.put(m.partition() + "@" + m.offset(), value);
                                lastAckedSentAt.merge(partition, sentAt, Math::max);
                            }
                        });
                    }
                    n++;
                    Thread.sleep(5);
                }
                producer.flush();
            } catch (Exception e) {
                errors.add(e.toString());
            }
        });
        Thread consuming = new Thread(() -> {
            try (KafkaConsumer<byte[], byte[]> consumer = consumer("failover-" + RUN)) {
                consumer.subscribe(List.of(topic));
                while (!stopConsuming.get()) {
                    ConsumerRecords<byte[], byte[]> records = consumer.poll(POLL);
                    for (ConsumerRecord<byte[], byte[]> r : records) {
                        consumed.put(r.partition() + "@" + r.offset(), r.value());
                        lastConsumedAt.put(r.partition(), System.nanoTime());
                    }
                    if (!records.isEmpty()) {
                        consumer.commitAsync();
                    }
                }
            } catch (Exception e) {
                errors.add("consumer: " + e);
            }
        });
        producing.start();
        consuming.start();
        long started = System.nanoTime();
        waitFor(() -> lastAckedSentAt.size() == parts && lastConsumedAt.size() == parts, 30_000, "writes and reads on every partition");
        System.out.println("READY");
        System.out.flush();
        List<Double> failovers = new ArrayList<>();
        BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = stdin.readLine(); line != null && !line.equals("stop"); line = stdin.readLine()) {
            if (line.equals("mark")) {
                long mark = System.nanoTime();
                waitFor(() -> {
                    for (int p = 0; p < parts; p++) {
                        if (lastAckedSentAt.getOrDefault(p, 0L) < mark || lastConsumedAt.getOrDefault(p, 0L) < mark) {
                            return false;
                        }
                    }
                    return true;
                }, 60_000, "writes and reads on every partition after the mark");
                double seconds = (System.nanoTime() - mark) / 1e9;
                failovers.add(seconds);
                System.out.println("WRITABLE " + seconds);
                System.out.flush();
            }
        }
        stopProducing.set(true);
        producing.join(150_000);
        check(!producing.isAlive(), "the producer finished");
        waitFor(() -> consumed.keySet().containsAll(acked.keySet()) || !errors.isEmpty(), 60_000, "the consumer to read every acknowledged record");
        stopConsuming.set(true);
        consuming.join(30_000);
        check(errors.isEmpty(), "no send or consume errors", errors.size() > 10 ? errors.subList(0, 10) : errors);
        int missing = 0;
        int differ = 0;
        for (Map.Entry<String, byte[]> e : acked.entrySet()) {
            byte[] got = consumed.get(e.getKey());
            if (got == null) {
                missing++;
            } else if (!Arrays.equals(got, e.getValue())) {
                differ++;
            }
        }
        check(missing == 0 && differ == 0, "every acknowledged record consumed at its offset", missing, differ);
        result.put("acked", acked.size());
        result.put("consumed", consumed.size());
        result.put("failovers", failovers);
        result.put("seconds", (System.nanoTime() - started) / 1e9);
    }

    // ---------------------------------------------------------------- security (SASL, TLS)

    /**
     * Over the listener and credentials of chronik.client.config: an admin creates a topic (and sees the
     * node at the address it connected to), a producer writes 20 records, a group consumer reads them back
     * in order and commits.
     */
    static void secure() throws Exception {
        String topic = "java-sec-" + RUN;
        try (Admin admin = newAdmin()) {
            createTopic(admin, topic, 1, Map.of());
            List<String> nodes = new ArrayList<>();
            for (Node node : get(admin.describeCluster().nodes())) {
                nodes.add(node.host() + ":" + node.port());
            }
            result.put("nodes", nodes);
        }
        int count = 20;
        try (KafkaProducer<byte[], byte[]> producer = producer(ProducerConfig.ACKS_CONFIG, "all")) {
            for (int i = 0; i < count; i++) {
                producer.send(new ProducerRecord<>(topic, 0, null, bytes("v" + i))).get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
        try (KafkaConsumer<byte[], byte[]> consumer = consumer("java-sec-g-" + RUN)) {
            consumer.subscribe(List.of(topic));
            List<String> values = new ArrayList<>();
            for (ConsumerRecord<byte[], byte[]> r : readAtLeast(consumer, count)) {
                values.add(new String(r.value(), StandardCharsets.UTF_8));
            }
            List<String> expected = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                expected.add("v" + i);
            }
            check(values.equals(expected), "the consumer read what was produced, in order", values);
            consumer.commitSync(Duration.ofSeconds(TIMEOUT_S));
            TopicPartition tp = new TopicPartition(topic, 0);
            OffsetAndMetadata committed = consumer.committed(Set.of(tp), Duration.ofSeconds(TIMEOUT_S)).get(tp);
            check(committed != null && committed.offset() == count, "the group committed offset", committed);
            result.put("received", values.size());
        }
        result.put("sent", count);
    }

    /** The exception class (and message) a refused client surfaces; a Java exception chain is searched for
     * the first org.apache.kafka exception. */
    static Map<String, Object> refusal(Throwable t) {
        Map<String, Object> out = new LinkedHashMap<>();
        while (t != null && !(t instanceof KafkaException) && t.getCause() != null && t.getCause() != t) {
            t = t.getCause();
        }
        out.put("exception", t == null ? null : t.getClass().getName());
        out.put("message", t == null ? null : t.getMessage());
        return out;
    }

    /**
     * With credentials (or a certificate) the broker refuses: what the admin client, the producer and the
     * consumer each surface.  The caller asserts the exception type (SaslAuthenticationException,
     * SslAuthenticationException); nothing may succeed.
     */
    static void authFailure() throws Exception {
        String topic = "java-refused-" + RUN;
        Properties ap = common("admin");
        ap.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 10000);
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 15000);
        try (Admin admin = Admin.create(ap)) {
            result.put("admin", refusal(failureOf(admin.describeCluster().nodes())));
        }
        try (KafkaProducer<byte[], byte[]> producer = producer(ProducerConfig.MAX_BLOCK_MS_CONFIG, 15000)) {
            Throwable t = null;
            try {
                producer.send(new ProducerRecord<>(topic, bytes("never"))).get(TIMEOUT_S, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                t = e.getCause();
            } catch (KafkaException e) {
                t = e;
            }
            result.put("producer", refusal(t));
        }
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(null)) {
            consumer.assign(List.of(new TopicPartition(topic, 0)));
            Throwable t = null;
            long deadline = System.currentTimeMillis() + 15000;
            try {
                while (System.currentTimeMillis() < deadline) {
                    check(consumer.poll(POLL).isEmpty(), "a refused consumer reads nothing");
                }
            } catch (KafkaException e) {
                t = e;
            }
            result.put("consumer", refusal(t));
        }
    }

    /** Sum of a client's selector metric (group producer-metrics / consumer-metrics) named ``name``. */
    static double clientMetric(Map<org.apache.kafka.common.MetricName, ? extends org.apache.kafka.common.Metric> metrics,
                               String name) {
        double total = 0;
        for (Map.Entry<org.apache.kafka.common.MetricName, ? extends org.apache.kafka.common.Metric> e : metrics.entrySet()) {
            String group = e.getKey().group();
            if (e.getKey().name().equals(name) && (group.equals("producer-metrics") || group.equals("consumer-metrics"))) {
                total += ((Number) e.getValue().metricValue()).doubleValue();
            }
        }
        return total;
    }

    static final String[] CONNECTION_METRICS = {"successful-authentication-total", "successful-reauthentication-total",
        "failed-reauthentication-total", "connection-close-total", "connection-creation-total"};

    /**
     * A producer and a group consumer work for ``seconds`` (several SASL session lifetimes): every record
     * acknowledged is consumed, and the clients' own metrics say how often they authenticated,
     * re-authenticated and closed connections.
     */
    static void reauth(double seconds) throws Exception {
        String topic = "java-reauth-" + RUN;
        try (Admin admin = newAdmin()) {
            createTopic(admin, topic, 1, Map.of());
        }
        List<String> acked = java.util.Collections.synchronizedList(new ArrayList<>());
        List<String> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        List<String> got = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = producer(ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.LINGER_MS_CONFIG, 5);
             KafkaConsumer<byte[], byte[]> consumer = consumer("java-reauth-g-" + RUN)) {
            consumer.subscribe(List.of(topic));
            long end = System.nanoTime() + (long) (seconds * 1e9);
            int sent = 0;
            while (System.nanoTime() < end) {
                String value = Integer.toString(sent++);
                producer.send(new ProducerRecord<>(topic, 0, null, bytes(value)), (metadata, e) -> {
                    if (e != null) {
                        errors.add(e.toString());
                    } else {
                        acked.add(value);
                    }
                });
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(50))) {
                    got.add(new String(r.value(), StandardCharsets.UTF_8));
                }
            }
            producer.flush();
            long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000L;
            while (got.size() < sent && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(POLL)) {
                    got.add(new String(r.value(), StandardCharsets.UTF_8));
                }
            }
            check(errors.isEmpty(), "no send errors", errors.size() > 10 ? errors.subList(0, 10) : errors);
            check(acked.size() == sent, "every record acknowledged", acked.size(), sent);
            check(got.equals(new ArrayList<>(acked)), "every acknowledged record consumed, in order", got.size(), acked.size());
            result.put("sent", sent);
            result.put("received", got.size());
            Map<String, Object> producerMetrics = new LinkedHashMap<>();
            Map<String, Object> consumerMetrics = new LinkedHashMap<>();
            for (String name : CONNECTION_METRICS) {
                producerMetrics.put(name, clientMetric(producer.metrics(), name));
                consumerMetrics.put(name, clientMetric(consumer.metrics(), name));
            }
            result.put("producer", producerMetrics);
            result.put("consumer", consumerMetrics);
        }
    }
}
