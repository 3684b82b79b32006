// Command checks runs franz-go (github.com/twmb/franz-go), a strict Go Kafka client,
// against a broker, one scenario per run:
//
//	checks SCENARIO BOOTSTRAP [REPLICATION_FACTOR]
//
// Scenarios: roundtrip, groups, transactions, admin.  Each does its work, checks
// what it got, and prints one JSON line last on stdout:
// {"scenario", "client", "ok", "failures", ...scenario results}; the exit status
// is 0 only when ok.  franz-go's own log (warnings and up) goes to stderr.
// Driven by tests/integration/test_franz_go.py.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const timeout = 60 * time.Second

var (
	bootstrap         []string
	replicationFactor int16 = 1
	run                     = strconv.FormatInt(time.Now().UnixNano(), 36)
	failures                = []string{}
	result                  = map[string]any{}
)

func check(ok bool, what string, got any) {
	if !ok {
		failures = append(failures, fmt.Sprintf("%s: got %v", what, got))
	}
}

func must(err error, what string) {
	if err != nil {
		panic(fmt.Sprintf("%s: %v", what, err))
	}
}

func clientVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/twmb/franz-go" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func newClient(opts ...kgo.Opt) *kgo.Client {
	base := []kgo.Opt{
		kgo.SeedBrokers(bootstrap...),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
		kgo.RequestTimeoutOverhead(10 * time.Second),
	}
	client, err := kgo.NewClient(append(base, opts...)...)
	must(err, "new client")
	return client
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), timeout)
}

func createTopic(adm *kadm.Client, name string, partitions int32, configs map[string]*string) {
	c, cancel := ctx()
	defer cancel()
	created, err := adm.CreateTopics(c, partitions, replicationFactor, configs, name)
	must(err, "create topic "+name)
	must(created.Error(), "create topic "+name)
}

// consumeAll reads partitions [0, partitions) of topic from the start until it has want records.
func consumeAll(topic string, partitions int32, want int, opts ...kgo.Opt) []*kgo.Record {
	offsets := map[int32]kgo.Offset{}
	for p := int32(0); p < partitions; p++ {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	consumer := newClient(append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchMaxBytes(8 << 20), kgo.FetchMaxPartitionBytes(4 << 20),
	}, opts...)...)
	defer consumer.Close()
	var got []*kgo.Record
	deadline := time.Now().Add(timeout)
	for len(got) < want && time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fetches := consumer.PollFetches(c)
		cancel()
		for _, e := range fetches.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) {
				failures = append(failures, fmt.Sprintf("fetch %s[%d]: %v", e.Topic, e.Partition, e.Err))
			}
		}
		fetches.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	return got
}

func digest(data []byte) any {
	if data == nil {
		return nil
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// roundTrip: one partition per codec, each written by its own idempotent acks=all producer:
// keys, null keys and values, headers, explicit timestamps and a 1 MB value; read back and
// compared byte for byte (the digests let the test compare with librdkafka too).
func roundTrip() {
	topic := "franz-rt-" + run
	adm := kadm.NewClient(newClient())
	defer adm.Close()
	createTopic(adm, topic, 5, nil)
	codecs := []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(),
		kgo.Lz4Compression(), kgo.ZstdCompression()}
	base := time.UnixMilli(1_700_000_000_000)
	var sent []*kgo.Record
	for partition, codec := range codecs {
		producer := newClient(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.ProducerBatchCompression(codec), kgo.ProducerBatchMaxBytes(2<<20))
		var records []*kgo.Record
		for i := 0; i < 40; i++ {
			r := &kgo.Record{Partition: int32(partition), Timestamp: base.Add(time.Duration(partition*1000+i) * time.Millisecond)}
			if i%7 != 3 {
				r.Key = []byte(fmt.Sprintf("key-%d-%d", partition, i))
			}
			if i%9 != 4 {
				r.Value = bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*37)
			}
			if i%3 == 0 {
				r.Headers = []kgo.RecordHeader{{Key: "h1", Value: []byte("v" + strconv.Itoa(i))}, {Key: "empty", Value: nil}}
			}
			records = append(records, r)
		}
		big := make([]byte, 1_000_000)
		for i := range big {
			big[i] = byte(i * 31)
		}
		records = append(records, &kgo.Record{Partition: int32(partition), Key: []byte("big"), Value: big, Timestamp: base})
		c, cancel := ctx()
		must(producer.ProduceSync(c, records...).FirstErr(), fmt.Sprintf("produce partition %d", partition))
		cancel()
		producer.Close()
		sent = append(sent, records...)
	}
	got := consumeAll(topic, 5, len(sent))
	sort.SliceStable(got, func(i, j int) bool {
		if got[i].Partition != got[j].Partition {
			return got[i].Partition < got[j].Partition
		}
		return got[i].Offset < got[j].Offset
	})
	check(len(got) == len(sent), "records read back", len(got))
	mismatches := 0
	var digests []map[string]any
	for i := 0; i < len(got) && i < len(sent); i++ {
		s, g := sent[i], got[i]
		same := s.Partition == g.Partition && s.Offset == g.Offset && bytes.Equal(s.Key, g.Key) &&
			(s.Key == nil) == (g.Key == nil) && bytes.Equal(s.Value, g.Value) && (s.Value == nil) == (g.Value == nil) &&
			s.Timestamp.Equal(g.Timestamp) && len(s.Headers) == len(g.Headers)
		for h := 0; same && h < len(s.Headers); h++ {
			same = s.Headers[h].Key == g.Headers[h].Key && bytes.Equal(s.Headers[h].Value, g.Headers[h].Value)
		}
		if !same {
			mismatches++
			if mismatches <= 3 {
				failures = append(failures, fmt.Sprintf("record %d differs: sent p%d@%d, read p%d@%d", i, s.Partition, s.Offset, g.Partition, g.Offset))
			}
		}
		digests = append(digests, map[string]any{"partition": g.Partition, "offset": g.Offset, "key": digest(g.Key),
			"value": digest(g.Value), "timestamp": g.Timestamp.UnixMilli()})
	}
	result["topic"] = topic
	result["sent"] = len(sent)
	result["received"] = len(got)
	result["mismatches"] = mismatches
	result["digests"] = digests
}

// groups: two members of one group (franz-go's default, cooperative-sticky) share four
// partitions; offsets committed by a member that leaves are where its successor resumes.
func groups() {
	topic := "franz-groups-" + run
	group := "franz-group-" + run
	adm := kadm.NewClient(newClient())
	defer adm.Close()
	createTopic(adm, topic, 4, nil)
	producer := newClient(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce := func(prefix string, n int) {
		var records []*kgo.Record
		for i := 0; i < n; i++ {
			records = append(records, &kgo.Record{Partition: int32(i % 4), Value: []byte(fmt.Sprintf("%s-%d", prefix, i))})
		}
		c, cancel := ctx()
		defer cancel()
		must(producer.ProduceSync(c, records...).FirstErr(), "produce "+prefix)
	}
	defer producer.Close()
	member := func() *kgo.Client {
		return newClient(kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.Balancers(kgo.CooperativeStickyBalancer()))
	}
	poll := func(client *kgo.Client, want int, seen map[string]int) int {
		n := 0
		deadline := time.Now().Add(timeout)
		for n < want && time.Now().Before(deadline) {
			c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			fetches := client.PollFetches(c)
			cancel()
			fetches.EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++; n++ })
		}
		return n
	}

	produce("first", 40)
	seen := map[string]int{}
	first := member()
	check(poll(first, 40, seen) == 40, "the first member alone reads every record", len(seen))
	c, cancel := ctx()
	must(first.CommitUncommittedOffsets(c), "commit")
	cancel()
	first.LeaveGroup()
	first.Close()

	produce("second", 40)
	a, b := member(), member()
	defer a.Close()
	defer b.Close()
	n := 0
	deadline := time.Now().Add(timeout)
	for n < 40 && time.Now().Before(deadline) {
		for _, m := range []*kgo.Client{a, b} {
			c, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			fetches := m.PollFetches(c)
			cancel()
			fetches.EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++; n++ })
		}
	}
	duplicates := 0
	for _, count := range seen {
		if count > 1 {
			duplicates++
		}
	}
	check(len(seen) == 80 && duplicates == 0, "two members resume from the commit: every record once", map[string]int{"distinct": len(seen), "duplicates": duplicates})
	for _, m := range []*kgo.Client{a, b} {
		c, cancel := ctx()
		must(m.CommitUncommittedOffsets(c), "commit")
		cancel()
	}
	// the members keep polling (cooperative-sticky rebalances in two rounds) until the group is stable
	var d kadm.DescribedGroup
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range []*kgo.Client{a, b} {
			c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			m.PollFetches(c)
			cancel()
		}
		c, cancel := ctx()
		described, err := adm.DescribeGroups(c, group)
		cancel()
		must(err, "describe group")
		d = described[group]
		if d.State == "Stable" {
			break
		}
	}
	result["groupState"] = d.State
	result["groupProtocol"] = d.Protocol
	result["groupMembers"] = len(d.Members)
	c, cancel = ctx()
	committed, err := adm.FetchOffsets(c, group)
	cancel()
	must(err, "fetch offsets")
	total := int64(0)
	for p := int32(0); p < 4; p++ {
		o, ok := committed.Lookup(topic, p)
		check(ok && o.Err == nil, fmt.Sprintf("committed offset of partition %d", p), o)
		total += o.At
	}
	result["committedTotal"] = total
	result["read"] = len(seen)
}

// transactions: commits and aborts across two partitions; a read_committed reader sees
// exactly the committed records, read_uncommitted every data record.
func transactions() {
	topic := "franz-txn-" + run
	adm := kadm.NewClient(newClient())
	defer adm.Close()
	createTopic(adm, topic, 2, nil)
	producer := newClient(kgo.TransactionalID("franz-txn-id-"+run), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(30*time.Second))
	defer producer.Close()
	var committed, everything []string
	for t := 0; t < 6; t++ {
		must(producer.BeginTransaction(), "begin")
		var records []*kgo.Record
		for i := 0; i < 5; i++ {
			value := fmt.Sprintf("t%d-%d", t, i)
			records = append(records, &kgo.Record{Partition: int32(i % 2), Value: []byte(value)})
			everything = append(everything, value)
			if t%3 != 1 {
				committed = append(committed, value)
			}
		}
		c, cancel := ctx()
		must(producer.ProduceSync(c, records...).FirstErr(), "produce in a transaction")
		commit := kgo.TryCommit
		if t%3 == 1 {
			commit = kgo.TryAbort
		}
		must(producer.EndTransaction(c, commit), "end transaction")
		cancel()
	}
	values := func(records []*kgo.Record) []string {
		var out []string
		for _, r := range records {
			out = append(out, string(r.Value))
		}
		sort.Strings(out)
		return out
	}
	sort.Strings(committed)
	sort.Strings(everything)
	readCommitted := values(consumeAll(topic, 2, len(committed), kgo.FetchIsolationLevel(kgo.ReadCommitted())))
	readUncommitted := values(consumeAll(topic, 2, len(everything), kgo.FetchIsolationLevel(kgo.ReadUncommitted())))
	check(strings.Join(readCommitted, ",") == strings.Join(committed, ","), "read_committed", readCommitted)
	check(strings.Join(readUncommitted, ",") == strings.Join(everything, ","), "read_uncommitted", readUncommitted)
	c, cancel := ctx()
	ends, err := adm.ListEndOffsets(c, topic)
	cancel()
	must(err, "end offsets")
	total := int64(0)
	for p := int32(0); p < 2; p++ {
		o, _ := ends.Lookup(topic, p)
		total += o.Offset
	}
	result["readCommitted"] = len(readCommitted)
	result["readUncommitted"] = len(readUncommitted)
	result["endOffsets"] = total
}

// admin: topics, partitions, configs, offsets (start, end, by time), DeleteRecords and
// DeleteTopics through kadm.
func admin() {
	topic := "franz-admin-" + run
	adm := kadm.NewClient(newClient())
	defer adm.Close()
	createTopic(adm, topic, 2, map[string]*string{"retention.ms": kadm.StringPtr("3600000")})
	c, cancel := ctx()
	defer cancel()
	again, err := adm.CreateTopics(c, 2, replicationFactor, nil, topic)
	must(err, "create again")
	result["createExisting"] = fmt.Sprint(again.Error())

	listed, err := adm.ListTopics(c, topic)
	must(err, "list topics")
	result["partitions"] = len(listed[topic].Partitions)
	_, err = adm.CreatePartitions(c, 1, topic)
	must(err, "create partitions")
	listed, err = adm.ListTopics(c, topic)
	must(err, "list topics")
	result["partitionsAfterCreate"] = len(listed[topic].Partitions)

	_, err = adm.AlterTopicConfigs(c, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("7200000")}}, topic)
	must(err, "alter configs")
	configs, err := adm.DescribeTopicConfigs(c, topic)
	must(err, "describe configs")
	for _, rc := range configs {
		for _, cfg := range rc.Configs {
			if cfg.Key == "retention.ms" && cfg.Value != nil {
				result["retentionMs"] = *cfg.Value
				result["retentionSource"] = cfg.Source.String()
			}
		}
	}

	producer := newClient(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer producer.Close()
	base := time.UnixMilli(1_700_000_000_000)
	var records []*kgo.Record
	for i := 0; i < 10; i++ {
		records = append(records, &kgo.Record{Partition: 0, Value: []byte(strconv.Itoa(i)), Timestamp: base.Add(time.Duration(i) * time.Second)})
	}
	must(producer.ProduceSync(c, records...).FirstErr(), "produce")
	ends, err := adm.ListEndOffsets(c, topic)
	must(err, "end offsets")
	end, _ := ends.Lookup(topic, 0)
	result["endOffset"] = end.Offset
	after, err := adm.ListOffsetsAfterMilli(c, base.Add(4500*time.Millisecond).UnixMilli(), topic)
	must(err, "offsets by time")
	at, _ := after.Lookup(topic, 0)
	result["offsetForTime"] = at.Offset

	var trim kadm.Offsets
	trim.Add(kadm.Offset{Topic: topic, Partition: 0, At: 4})
	deleted, err := adm.DeleteRecords(c, trim)
	must(err, "delete records")
	must(deleted.Error(), "delete records")
	starts, err := adm.ListStartOffsets(c, topic)
	must(err, "start offsets")
	start, _ := starts.Lookup(topic, 0)
	result["startAfterDeleteRecords"] = start.Offset

	dropped, err := adm.DeleteTopics(c, topic)
	must(err, "delete topics")
	must(dropped.Error(), "delete topics")
	fresh := kadm.NewClient(newClient()) // kadm answers ListTopics from its client's metadata cache
	defer fresh.Close()
	listed, err = fresh.ListTopics(c, topic)
	must(err, "list topics after delete")
	result["existsAfterDelete"] = listed.Has(topic) && listed[topic].Err == nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: checks SCENARIO BOOTSTRAP [REPLICATION_FACTOR]")
		os.Exit(2)
	}
	scenario := os.Args[1]
	bootstrap = strings.Split(os.Args[2], ",")
	if len(os.Args) > 3 {
		rf, err := strconv.Atoi(os.Args[3])
		must(err, "replication factor")
		replicationFactor = int16(rf)
	}
	scenarios := map[string]func(){"roundtrip": roundTrip, "groups": groups, "transactions": transactions, "admin": admin}
	body, ok := scenarios[scenario]
	if !ok {
		fmt.Fprintln(os.Stderr, "unknown scenario", scenario)
		os.Exit(2)
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				failures = append(failures, fmt.Sprint("exception: ", r))
			}
		}()
		body()
	}()
	result["scenario"] = scenario
	result["client"] = clientVersion()
	result["ok"] = len(failures) == 0
	result["failures"] = failures
	line, err := json.Marshal(result)
	must(err, "result")
	fmt.Println(string(line))
	if len(failures) > 0 {
		os.Exit(1)
	}
}
