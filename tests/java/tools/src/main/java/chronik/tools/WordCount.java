package chronik.tools;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.ThreadMetadata;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Kafka Streams word count: lines from INPUT are split into words, re-keyed by word (a
 * repartition topic), counted in a KTable (a state store with a changelog topic) and the counts
 * streamed to OUTPUT.
 *
 * <pre>java -cp ... chronik.tools.WordCount BOOTSTRAP APPLICATION_ID INPUT OUTPUT STATE_DIR [CHANGELOG_POLICY [GUARANTEE]]</pre>
 *
 * CHANGELOG_POLICY "default" leaves the changelog as Streams makes it (cleanup.policy=compact);
 * "delete" configures the store's changelog with cleanup.policy=delete.  GUARANTEE is
 * Streams' processing.guarantee, at_least_once (the default) or exactly_once_v2.  The program
 * prints "RESTORED n" and "RUNNING" once the application runs with every task of the topology
 * active on this instance and no restoration under way (n: records restored into the store from
 * its changelog), then works until a line "stop" on stdin, closes and prints "CLOSED".  It exits
 * 1 (printing "FAILED: ...") if the application fails.
 *
 * <p>The count is read only once every task is active here and no restoration is under way, not
 * at the first RUNNING, which could come before the tasks were handed over and restored (the
 * group may still hold the previous run's member: Streams does not leave the group on close).
 * Each restoration's start and end offsets are logged to stderr.
 */
public final class WordCount {
    private WordCount() {
    }

    /** How many tasks run as active tasks in this instance's stream threads. */
    static int activeTasks(KafkaStreams streams) {
        int n = 0;
        for (ThreadMetadata thread : streams.metadataForLocalThreads()) {
            n += thread.activeTasks().size();
        }
        return n;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String applicationId = args[1];
        String input = args[2];
        String output = args[3];
        String stateDir = args[4];
        String policy = args.length > 5 ? args[5] : "default";
        String guarantee = args.length > 6 ? args[6] : StreamsConfig.AT_LEAST_ONCE;

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0); // every update goes downstream
        // a restarted application waits for the previous run's member (Streams does not leave the group on
        // close) to time out: Kafka's group.min.session.timeout.ms, the shortest a Kafka broker accepts
        props.put(StreamsConfig.consumerPrefix("session.timeout.ms"), 6000);
        props.put(StreamsConfig.consumerPrefix("heartbeat.interval.ms"), 500);

        Materialized<String, Long, KeyValueStore<Bytes, byte[]>> store =
            Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts")
                .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long());
        if (policy.equals("delete")) {
            store = store.withLoggingEnabled(Map.of("cleanup.policy", "delete"));
        }
        StreamsBuilder builder = new StreamsBuilder();
        KTable<String, Long> counts = builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
            .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\W+")))
            .filter((key, word) -> !word.isEmpty())
            .map((key, word) -> KeyValue.pair(word, word))
            .groupByKey(Grouped.with("words", Serdes.String(), Serdes.String()))
            .count(store);
        counts.toStream().to(output, Produced.with(Serdes.String(), Serdes.Long()));

        AtomicLong restored = new AtomicLong();
        Set<TopicPartition> restoring = ConcurrentHashMap.newKeySet();
        int inputPartitions;
        Properties adminProps = new Properties();
        adminProps.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            inputPartitions = admin.describeTopics(List.of(input)).allTopicNames().get(60, TimeUnit.SECONDS)
                .get(input).partitions().size();
        }
        // sub-topology 0 reads INPUT, sub-topology 1 the repartition topic (as many partitions)
        int tasks = 2 * inputPartitions;
        CountDownLatch running = new CountDownLatch(1);
        try (KafkaStreams streams = new KafkaStreams(builder.build(), props)) {
            streams.setGlobalStateRestoreListener(new StateRestoreListener() {
                @Override
                public void onRestoreStart(TopicPartition partition, String storeName, long startingOffset, long endingOffset) {
                    restoring.add(partition);
                    System.err.println("restoring " + partition + " from " + startingOffset + " to " + endingOffset);
                }

                @Override
                public void onRestoreSuspended(TopicPartition partition, String storeName, long totalRestored) {
                    restored.addAndGet(totalRestored);
                    restoring.remove(partition);
                }

                @Override
                public void onBatchRestored(TopicPartition partition, String storeName, long batchEndOffset, long numRestored) {
                }

                @Override
                public void onRestoreEnd(TopicPartition partition, String storeName, long totalRestored) {
                    restored.addAndGet(totalRestored);
                    restoring.remove(partition);
                    System.err.println("restored " + partition + ": " + totalRestored);
                }
            });
            streams.setStateListener((now, before) -> {
                if (now == KafkaStreams.State.RUNNING) {
                    running.countDown();
                }
            });
            streams.setUncaughtExceptionHandler(e -> {
                System.out.println("FAILED: " + e);
                System.out.flush();
                e.printStackTrace();
                System.exit(1);
                return null;
            });
            streams.start();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (!(streams.state() == KafkaStreams.State.RUNNING && restoring.isEmpty()
                     && activeTasks(streams) == tasks)) {
                if (System.nanoTime() > deadline) {
                    System.out.println("FAILED: not RUNNING with " + tasks + " active tasks after 120 s (state "
                        + streams.state() + ", " + activeTasks(streams) + " active, restoring " + restoring + ")");
                    System.exit(1);
                }
                running.await(100, TimeUnit.MILLISECONDS);
            }
            System.out.println("RESTORED " + restored.get());
            System.out.println("RUNNING");
            System.out.flush();
            BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            for (String line = stdin.readLine(); line != null && !line.equals("stop"); line = stdin.readLine()) {
                // nothing else is asked of the program
            }
        }
        System.out.println("CLOSED");
        System.out.flush();
        System.exit(0);
    }
}
