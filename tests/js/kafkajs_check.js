#!/usr/bin/env node
// kafkajs (the Node.js Kafka client) against a running Chronik broker.
//
//   node kafkajs_check.js BOOTSTRAP SCENARIO
//
// Scenarios: admin, roundtrip, idempotent, group, transactions.  Each does
// real work over real sockets, checks what it got back and prints one JSON
// object on stdout: {"scenario", "ok", "failures": [...], ...details}.  The
// exit status is 0 when every check passed.  tests/integration/test_kafkajs.py
// runs it; kafkajs's own log lines go to stderr.
'use strict'

const crypto = require('crypto')

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1' // every send here names its partition
const { Kafka, CompressionTypes, ConfigResourceTypes, logLevel } = require('kafkajs')

const [bootstrap, scenario] = process.argv.slice(2)
if (!bootstrap || !scenario) {
  process.stderr.write('usage: kafkajs_check.js BOOTSTRAP SCENARIO\n')
  process.exit(2)
}

const RUN = `${Date.now().toString(36)}-${crypto.randomBytes(3).toString('hex')}`
const result = { scenario, ok: false, failures: [] }

// kafkajs logs go to stderr (not stdout, which carries the JSON result); a
// scenario can also watch for one log message (e.g. the producer id).
const logWatchers = []
const logCreator = () => ({ namespace, level, label, log }) => {
  for (const watch of logWatchers) watch(log)
  if (level <= logLevel.WARN) process.stderr.write(`[kafkajs ${label} ${namespace}] ${JSON.stringify(log)}\n`)
}

// CHRONIK_KAFKAJS_SECURITY: optional JSON {"ssl": {"ca", "cert", "key"} (PEM file
// paths), "sasl": {"mechanism", "username", "password"}} for a secured listener.
const security = JSON.parse(process.env.CHRONIK_KAFKAJS_SECURITY || '{}')
const securityOptions = {}
if (security.ssl) {
  const fs = require('fs')
  const read = name => security.ssl[name] ? fs.readFileSync(security.ssl[name], 'utf-8') : undefined
  securityOptions.ssl = { ca: [read('ca')], cert: read('cert'), key: read('key') }
}
if (security.sasl) securityOptions.sasl = security.sasl

const kafka = new Kafka({
  clientId: `chronik-kafkajs-${scenario}`,
  brokers: [bootstrap],
  ...securityOptions,
  logLevel: logLevel.DEBUG,
  logCreator,
  connectionTimeout: 3000,
  requestTimeout: 10000,
  retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 },
})

// Consumers with short heartbeats and fetch waits, so that rebalances and
// disconnects take well under a second.
const FAST_CONSUMER = {
  sessionTimeout: 6000,
  rebalanceTimeout: 10000,
  heartbeatInterval: 200,
  maxWaitTimeInMs: 100,
  retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 },
}

function check(condition, what, detail) {
  if (!condition) result.failures.push(detail === undefined ? what : `${what}: ${JSON.stringify(detail)}`)
  return condition
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms))
}

async function waitFor(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await predicate()) return true
    await sleep(25)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

const b64 = buffer => (buffer === null || buffer === undefined ? null : Buffer.from(buffer).toString('base64'))

function sameBuffer(a, b) {
  if (a === null || a === undefined) return b === null || b === undefined
  if (b === null || b === undefined) return false
  return Buffer.from(a).equals(Buffer.from(b))
}

// Headers as sent ({key: string | Buffer | [..]}) and as kafkajs decodes them
// ({key: Buffer | [Buffer..]}), normalised to [[key, base64]] in order.
function normalHeaders(headers) {
  const out = []
  for (const [key, value] of Object.entries(headers || {})) {
    for (const one of Array.isArray(value) ? value : [value]) out.push([key, b64(one === null ? null : Buffer.from(one))])
  }
  return out
}

// ---------------------------------------------------------------- admin
async function admin() {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const topic = `kjs-admin-${RUN}`
    const other = `kjs-admin-other-${RUN}`
    const created = await admin.createTopics({
      topics: [
        { topic, numPartitions: 3, replicationFactor: 1,
          configEntries: [{ name: 'retention.ms', value: '3600000' }, { name: 'max.message.bytes', value: '200000' }] },
        { topic: other, numPartitions: 1 },
      ],
    })
    check(created === true, 'createTopics returns true', created)
    const again = await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] })
    check(again === false, 'createTopics of an existing topic returns false (TOPIC_ALREADY_EXISTS)', again)

    let invalid = null
    try {
      await admin.createTopics({ topics: [{ topic: `kjs-bad-${RUN}`, numPartitions: 1,
        configEntries: [{ name: 'retention.ms', value: 'not-a-number' }] }] })
    } catch (e) {
      invalid = { name: e.name, type: e.type || (e.errors && e.errors[0] && e.errors[0].type) }
    }
    result.invalidConfig = invalid
    check(invalid !== null && invalid.type === 'INVALID_CONFIG', 'an invalid topic config is refused with INVALID_CONFIG', invalid)

    const topics = await admin.listTopics()
    check(topics.includes(topic) && topics.includes(other), 'listTopics lists the new topics', topics)
    check(!topics.includes(`kjs-bad-${RUN}`), 'the refused topic was not created')

    const metadata = await admin.fetchTopicMetadata({ topics: [topic] })
    const partitions = metadata.topics[0].partitions.sort((a, b) => a.partitionId - b.partitionId)
    result.metadata = partitions.map(p => ({ id: p.partitionId, leader: p.leader, replicas: p.replicas, isr: p.isr }))
    check(metadata.topics[0].name === topic, 'fetchTopicMetadata names the topic', metadata.topics[0].name)
    check(partitions.length === 3, 'fetchTopicMetadata: 3 partitions', partitions.length)
    check(partitions.every(p => p.partitionErrorCode === 0 && p.leader >= 0 && p.replicas.length === 1 && p.isr.length === 1),
      'every partition has a leader, one replica, one in-sync replica', result.metadata)

    const cluster = await admin.describeCluster()
    result.cluster = cluster
    check(cluster.brokers.length === 1 && cluster.controller === cluster.brokers[0].nodeId,
      'describeCluster: one broker, the controller', cluster)

    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms', 'max.message.bytes', 'cleanup.policy'] }],
    })
    const entries = Object.fromEntries(described.resources[0].configEntries.map(e => [e.configName, e]))
    result.describedConfigs = Object.fromEntries(Object.entries(entries).map(([k, e]) => [k, { value: e.configValue, isDefault: e.isDefault }]))
    check(described.resources[0].errorCode === 0, 'describeConfigs: no error', described.resources[0])
    check(entries['retention.ms'] && entries['retention.ms'].configValue === '3600000' && !entries['retention.ms'].isDefault,
      'describeConfigs: retention.ms as created', entries['retention.ms'])
    check(entries['max.message.bytes'] && entries['max.message.bytes'].configValue === '200000',
      'describeConfigs: max.message.bytes as created', entries['max.message.bytes'])
    check(entries['cleanup.policy'] && entries['cleanup.policy'].configValue === 'delete' && entries['cleanup.policy'].isDefault,
      'describeConfigs: cleanup.policy default', entries['cleanup.policy'])

    const broker = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.BROKER, name: String(cluster.brokers[0].nodeId) }],
    })
    const brokerEntries = broker.resources[0].configEntries
    check(broker.resources[0].errorCode === 0 && brokerEntries.some(e => e.configName === 'log.retention.ms'),
      'describeConfigs of the broker lists log.retention.ms', brokerEntries.map(e => e.configName))

    await admin.alterConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic,
      configEntries: [{ name: 'retention.ms', value: '7200000' }] }] })
    const altered = await admin.describeConfigs({ includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }] })
    check(altered.resources[0].configEntries[0].configValue === '7200000', 'alterConfigs changed retention.ms',
      altered.resources[0].configEntries[0])

    await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] })
    const grown = await admin.fetchTopicMetadata({ topics: [topic] })
    check(grown.topics[0].partitions.length === 4, 'createPartitions: 4 partitions', grown.topics[0].partitions.length)

    let offsets = await admin.fetchTopicOffsets(topic)
    check(offsets.length === 4 && offsets.every(o => o.offset === '0' && o.high === '0' && o.low === '0'),
      'fetchTopicOffsets of an empty topic: all 0', offsets)

    const producer = kafka.producer()
    await producer.connect()
    const t0 = Date.now() - 60000
    for (let p = 0; p < 4; p++) {
      await producer.send({ topic, acks: -1, messages: Array.from({ length: p + 1 }, (_, i) =>
        ({ partition: p, value: `v${i}`, timestamp: String(t0 + i * 1000) })) })
    }
    await producer.disconnect()
    offsets = (await admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition)
    result.offsets = offsets
    check(offsets.every(o => o.high === String(o.partition + 1) && o.offset === o.high && o.low === '0'),
      'fetchTopicOffsets: high watermark = records produced', offsets)

    const byTime = (await admin.fetchTopicOffsetsByTimestamp(topic, t0 + 1500)).sort((a, b) => a.partition - b.partition)
    result.offsetsByTimestamp = byTime
    // records at t0, t0+1000, t0+2000, t0+3000: the first at or after t0+1500 is offset 2,
    // partitions with fewer records answer their log end.
    check(JSON.stringify(byTime.map(o => o.offset)) === JSON.stringify(['1', '2', '2', '2']),
      'fetchTopicOffsetsByTimestamp', byTime)

    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 3, offset: '2' }] })
    offsets = (await admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition)
    check(offsets[3].low === '2' && offsets[3].high === '4', 'deleteTopicRecords moved the log start', offsets[3])

    await admin.deleteTopics({ topics: [topic, other] })
    const left = await admin.listTopics()
    check(!left.includes(topic) && !left.includes(other), 'deleteTopics removed both topics', left)
    // kafkajs's admin asks for Metadata with allow_auto_topic_creation false:
    // a deleted topic must stay deleted.
    const noRetry = kafka.admin({ retry: { retries: 0 } })
    await noRetry.connect()
    let gone = null
    try {
      await noRetry.fetchTopicOffsets(topic)
    } catch (e) {
      gone = (e.cause && e.cause.type) || e.type || e.name
    }
    await noRetry.disconnect()
    result.deletedTopicError = gone
    check(gone === 'UNKNOWN_TOPIC_OR_PARTITION', 'fetchTopicOffsets of a deleted topic: UNKNOWN_TOPIC_OR_PARTITION', gone)
    check(!(await admin.listTopics()).includes(topic), 'the deleted topic was not auto-created again')
  } finally {
    await admin.disconnect()
  }
}

// ------------------------------------------------------------ roundtrip
// Records of every shape, to three partitions, with acks -1 and 1, plain and
// gzip, read back by a kafkajs consumer and compared byte for byte.
function shapes(tag, t0) {
  const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  return [
    { key: Buffer.from(`key-${tag}`), value: allBytes,
      headers: { 'h-bin': Buffer.from([0, 1, 2, 255]), 'h-str': `s-${tag}` }, timestamp: String(t0) },
    { key: Buffer.from(`tomb-${tag}`), value: null, timestamp: String(t0 + 1) },
    { key: null, value: Buffer.from(`no-key-${tag}`), timestamp: String(t0 + 2) },
    { key: Buffer.alloc(0), value: Buffer.alloc(0), headers: { dup: ['one', 'two'], empty: Buffer.alloc(0) }, timestamp: String(t0 + 3) },
    { key: Buffer.from('ключ-🔑'), value: Buffer.from('значение ✓'), timestamp: String(t0 - 86400000) },
    { key: Buffer.from(`big-${tag}`), value: crypto.randomBytes(50000), timestamp: String(t0 + 5) },
    { key: Buffer.from(`zip-${tag}`), value: Buffer.alloc(100000, `compressible-${tag}-`), timestamp: String(t0 + 6) },
  ]
}

async function consumeAll(topic, groupId, expected, extra = {}) {
  const consumer = kafka.consumer({ groupId, ...FAST_CONSUMER, ...extra })
  const got = []
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({ eachMessage: async ({ partition, message }) => { got.push({ partition, message }) } })
  try {
    await waitFor(() => got.length >= expected, 15000, `${expected} records from ${topic} (got ${got.length})`)
    await sleep(200) // anything past the expected count would be a duplicate
  } finally {
    await consumer.disconnect()
  }
  return got
}

async function roundtrip() {
  const admin = kafka.admin()
  await admin.connect()
  const topic = `kjs-rt-${RUN}`
  const appendTopic = `kjs-rt-append-${RUN}`
  await admin.createTopics({ topics: [
    { topic, numPartitions: 3 },
    { topic: appendTopic, numPartitions: 1, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] },
  ] })

  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  const sent = [] // {partition, offset, key, value, headers, timestamp}
  const t0 = Date.now() - 3600000
  let n = 0
  for (const acks of [-1, 1]) {
    for (const compression of [CompressionTypes.None, CompressionTypes.GZIP]) {
      for (let partition = 0; partition < 3; partition++) {
        const tag = `a${acks}-c${compression}-p${partition}`
        const messages = shapes(tag, t0 + 1000 * n++).map(m => ({ ...m, partition }))
        const meta = await producer.send({ topic, acks, compression, timeout: 5000, messages })
        check(meta.length === 1 && meta[0].partition === partition && meta[0].errorCode === 0,
          `send ${tag}: one partition, no error`, meta)
        const base = Number(meta[0].baseOffset)
        messages.forEach((m, i) => sent.push({ ...m, offset: String(base + i) }))
      }
    }
  }
  // sendBatch: two topics in one request.
  const before = Date.now()
  const batchMeta = await producer.sendBatch({ acks: -1, compression: CompressionTypes.GZIP, topicMessages: [
    { topic, messages: [{ partition: 1, key: 'batch-k', value: 'batch-v', headers: { via: 'sendBatch' }, timestamp: String(t0) }] },
    { topic: appendTopic, messages: [{ key: 'append', value: 'log-append-time', timestamp: '1000' }] },
  ] })
  const after = Date.now()
  check(batchMeta.length === 2 && batchMeta.every(m => m.errorCode === 0), 'sendBatch to two topics', batchMeta)
  const toMain = batchMeta.find(m => m.topicName === topic)
  sent.push({ partition: 1, offset: toMain.baseOffset, key: Buffer.from('batch-k'), value: Buffer.from('batch-v'),
    headers: { via: 'sendBatch' }, timestamp: String(t0) })
  const toAppend = batchMeta.find(m => m.topicName === appendTopic)
  result.logAppendTime = toAppend.logAppendTime
  check(Number(toAppend.logAppendTime) >= before - 1000 && Number(toAppend.logAppendTime) <= after + 1000,
    'produce response carries the log append time of a LogAppendTime topic', toAppend)
  await producer.disconnect()

  const offsets = (await admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition)
  const perPartition = [0, 1, 2].map(p => sent.filter(s => s.partition === p).length)
  check(JSON.stringify(offsets.map(o => Number(o.high))) === JSON.stringify(perPartition),
    'high watermarks = records sent per partition', { offsets, perPartition })
  await admin.disconnect()

  const got = await consumeAll(topic, `kjs-rt-group-${RUN}`, sent.length)
  result.sent = sent.length
  result.received = got.length
  check(got.length === sent.length, 'received exactly what was sent', { sent: sent.length, got: got.length })
  const byPosition = new Map(got.map(g => [`${g.partition}/${g.message.offset}`, g.message]))
  check(byPosition.size === got.length, 'no record received twice')
  let mismatches = 0
  for (const s of sent) {
    const m = byPosition.get(`${s.partition}/${s.offset}`)
    const same = m !== undefined && sameBuffer(s.key, m.key) && sameBuffer(s.value, m.value) &&
      (s.value === null) === (m.value === null) &&
      JSON.stringify(normalHeaders(s.headers)) === JSON.stringify(normalHeaders(m.headers)) &&
      m.timestamp === s.timestamp
    if (!same && mismatches++ < 5) {
      check(false, `record ${s.partition}/${s.offset} differs`, {
        sent: { key: b64(s.key), value: s.value && b64(s.value).slice(0, 40), headers: normalHeaders(s.headers), ts: s.timestamp },
        got: m && { key: b64(m.key), value: m.value && b64(m.value).slice(0, 40), headers: normalHeaders(m.headers), ts: m.timestamp },
      })
    }
  }
  result.mismatches = mismatches
  check(got.every(g => g.message.batchContext.timestampType === 0), 'CreateTime batches')

  // The LogAppendTime topic: the broker's time replaces the producer's.
  const appended = await consumeAll(appendTopic, `kjs-rt-append-group-${RUN}`, 1)
  const m = appended[0].message
  result.appendTimestamp = m.timestamp
  check(m.batchContext.timestampType === 1 && m.timestamp === String(toAppend.logAppendTime) && m.timestamp !== '1000',
    'LogAppendTime topic: consumer sees the broker time', { ts: m.timestamp, type: m.batchContext.timestampType })

  // For the Python side: what was sent, to read back with another client.
  result.topic = topic
  result.records = sent.map(s => ({ partition: s.partition, offset: Number(s.offset), key: b64(s.key),
    value: s.value === null ? null : b64(s.value), headers: normalHeaders(s.headers), timestamp: Number(s.timestamp) }))
}

// ----------------------------------------------------------- idempotent
async function idempotent() {
  const admin = kafka.admin()
  await admin.connect()
  const topic = `kjs-idem-${RUN}`
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] })
  await admin.disconnect()

  let producerIds = []
  logWatchers.push(log => {
    if (log.message === 'Initialized producer id & epoch') producerIds.push({ id: String(log.producerId), epoch: log.producerEpoch })
  })
  const EOS_RETRY = { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 100, maxRetryTime: 1000 }
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: EOS_RETRY })
  await producer.connect()
  check(producerIds.length === 1 && Number(producerIds[0].id) >= 0, 'InitProducerId gave a producer id', producerIds)
  const batches = 6
  const perBatch = 5
  const expected = []
  for (let b = 0; b < batches; b++) {
    const partition = b % 2
    const compression = b % 3 === 2 ? CompressionTypes.GZIP : CompressionTypes.None
    const messages = Array.from({ length: perBatch }, (_, i) => ({ partition, key: `b${b}`, value: `idem-${b}-${i}` }))
    const meta = await producer.send({ topic, compression, messages }) // acks -1: the idempotent producer's only choice
    check(meta[0].errorCode === 0, `idempotent send ${b}`, meta)
    messages.forEach((msg, i) => expected.push({ partition, offset: String(Number(meta[0].baseOffset) + i), value: msg.value }))
  }
  // A second idempotent producer gets its own id.
  const second = kafka.producer({ idempotent: true, maxInFlightRequests: 1, retry: EOS_RETRY })
  await second.connect()
  await second.send({ topic, messages: [{ partition: 0, value: 'second-producer' }] })
  check(producerIds.length === 2 && producerIds[1].id !== producerIds[0].id, 'a second producer gets another id', producerIds)
  expected.push({ partition: 0, offset: String(batches / 2 * perBatch), value: 'second-producer' })
  await second.disconnect()

  let acksError = null
  try {
    await producer.send({ topic, acks: 1, messages: [{ value: 'x' }] })
  } catch (e) {
    acksError = e.name
  }
  check(acksError !== null, 'kafkajs refuses acks 1 for an idempotent producer', acksError)
  await producer.disconnect()

  const got = await consumeAll(topic, `kjs-idem-group-${RUN}`, expected.length)
  result.producerIds = producerIds
  result.received = got.length
  check(got.length === expected.length, 'each record exactly once', { expected: expected.length, got: got.length })
  const byPos = new Map(got.map(g => [`${g.partition}/${g.message.offset}`, g.message]))
  check(expected.every(e => byPos.has(`${e.partition}/${e.offset}`) && byPos.get(`${e.partition}/${e.offset}`).value.toString() === e.value),
    'records at the offsets the produce responses named')
  // The stored batches keep the producer id, epoch and sequence numbers: per
  // partition the first producer's sequences are 0, 5, 10 (one batch per send).
  const firstSeqs = {}
  for (const g of got) {
    const ctx = g.message.batchContext
    if (ctx.producerId !== producerIds[0].id) continue
    const list = (firstSeqs[g.partition] = firstSeqs[g.partition] || [])
    if (!list.includes(ctx.firstSequence)) list.push(ctx.firstSequence)
  }
  result.firstSequences = firstSeqs
  check(JSON.stringify(firstSeqs) === JSON.stringify({ 0: [0, 5, 10], 1: [0, 5, 10] }),
    'batches carry the producer id and consecutive sequence numbers', firstSeqs)
}

// ---------------------------------------------------------------- group
// Two consumers share four partitions, commit after each record up to a
// cut-off offset, stop; more records arrive; restarted consumers resume at
// the committed offsets: nothing lost, nothing before a commit again; then
// one consumer with auto-commit.
async function group() {
  const admin = kafka.admin()
  await admin.connect()
  const topic = `kjs-group-${RUN}`
  const groupId = `kjs-group-${RUN}`
  const PARTITIONS = 4
  const PER_PARTITION = 10
  const CUTOFF = 6 // records at offsets < CUTOFF get committed in phase 1
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }] })
  const producer = kafka.producer()
  await producer.connect()
  const produce = async phase => {
    for (let p = 0; p < PARTITIONS; p++) {
      await producer.send({ topic, messages: Array.from({ length: PER_PARTITION }, (_, i) => ({ partition: p, value: `${phase}-p${p}-${i}` })) })
    }
  }

  const t = Date.now()
  const mark = what => { (result.phaseMs = result.phaseMs || {})[what] = Date.now() - t }
  // Phase 1: two members.
  const assignments = {}
  const phase1 = { a: [], b: [] }
  const members = {}
  for (const name of ['a', 'b']) {
    const consumer = kafka.consumer({ groupId, ...FAST_CONSUMER })
    consumer.on(consumer.events.GROUP_JOIN, e => { assignments[name] = { memberId: e.payload.memberId, partitions: (e.payload.memberAssignment[topic] || []).slice().sort() } })
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        phase1[name].push({ partition, offset: Number(message.offset), value: message.value.toString() })
        if (Number(message.offset) < CUTOFF) {
          await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }])
        }
      },
    })
    members[name] = consumer
  }
  let described = null
  await waitFor(async () => {
    const a = assignments.a
    const b = assignments.b
    if (!a || !b) return false
    const all = a.partitions.concat(b.partitions).sort()
    if (JSON.stringify(all) !== JSON.stringify([0, 1, 2, 3]) || a.partitions.length === 0 || b.partitions.length === 0) return false
    described = (await admin.describeGroups([groupId])).groups[0]
    const ids = described.members.map(m => m.memberId).sort()
    return described.state === 'Stable' && JSON.stringify(ids) === JSON.stringify([a.memberId, b.memberId].sort())
  }, 15000, 'both members to share the four partitions in a stable group')
  result.assignments = { a: assignments.a.partitions, b: assignments.b.partitions }
  result.groupState = { state: described.state, protocol: described.protocol, members: described.members.length }
  check(described.protocolType === 'consumer', 'describeGroups: consumer protocol type', described.protocolType)

  mark('stable')
  await produce('one')
  await waitFor(() => phase1.a.length + phase1.b.length >= PARTITIONS * PER_PARTITION, 15000, 'phase 1 records')
  await sleep(300)
  for (const name of ['a', 'b']) {
    check(phase1[name].every(r => assignments[name].partitions.includes(r.partition)),
      `member ${name} only got its own partitions`, phase1[name].map(r => r.partition))
  }
  const all1 = phase1.a.concat(phase1.b)
  check(all1.length === PARTITIONS * PER_PARTITION && new Set(all1.map(r => `${r.partition}/${r.offset}`)).size === all1.length,
    'phase 1: every record once', all1.length)
  mark('phase1consumed')
  await Promise.all([members.a.disconnect(), members.b.disconnect()])
  mark('phase1stopped')

  const committed = (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions.sort((x, y) => x.partition - y.partition)
  result.committedAfterPhase1 = committed.map(c => c.offset)
  check(committed.every(c => c.offset === String(CUTOFF)), 'committed offsets = the cut-off', committed)
  const emptyGroup = (await admin.describeGroups([groupId])).groups[0]
  check(emptyGroup.state === 'Empty' && emptyGroup.members.length === 0, 'group empty after both left', emptyGroup.state)

  // Phase 2: more records, then restarted members (fromBeginning false: only
  // the committed offsets can bring them to offset CUTOFF).  A record counts
  // once its commit succeeded: the second member's join rebalances the
  // first, and kafkajs redelivers (at least once) a record whose commit the
  // rebalance interrupted, but never one whose commit went through.
  await produce('two')
  const phase2 = []
  const restarted = []
  for (let i = 0; i < 2; i++) {
    const consumer = kafka.consumer({ groupId, ...FAST_CONSUMER })
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: false })
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }])
        phase2.push({ partition, offset: Number(message.offset), value: message.value.toString() })
      },
    })
    restarted.push(consumer)
  }
  const expected2 = PARTITIONS * (2 * PER_PARTITION - CUTOFF)
  await waitFor(() => phase2.length >= expected2, 15000, `phase 2 records (${phase2.length}/${expected2})`)
  mark('phase2consumed')
  await sleep(300)
  await Promise.all(restarted.map(c => c.disconnect()))
  mark('phase2stopped')
  result.phase2Received = phase2.length
  const positions = phase2.map(r => `${r.partition}/${r.offset}`)
  const wanted = []
  for (let p = 0; p < PARTITIONS; p++) for (let o = CUTOFF; o < 2 * PER_PARTITION; o++) wanted.push(`${p}/${o}`)
  check(new Set(positions).size === positions.length, 'phase 2: no committed record delivered again')
  check(JSON.stringify(Array.from(new Set(positions)).sort()) === JSON.stringify(wanted.sort()),
    'phase 2: exactly the records from the committed offsets on', { got: phase2.length, wanted: wanted.length })
  const redelivered = phase2.filter(r => r.offset < PER_PARTITION)
  check(redelivered.every(r => r.value === `one-p${r.partition}-${r.offset}`), 'uncommitted phase-1 records redelivered intact')
  let committed2 = (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions
  result.committedAfterPhase2 = committed2.sort((x, y) => x.partition - y.partition).map(c => c.offset)
  check(committed2.every(c => c.offset === String(2 * PER_PARTITION)), 'phase 2 committed the log end', committed2)

  // Phase 3: one member with kafkajs's default auto-commit.
  for (let p = 0; p < PARTITIONS; p++) await producer.send({ topic, messages: [{ partition: p, value: `three-p${p}` }] })
  const phase3 = []
  const auto = kafka.consumer({ groupId, ...FAST_CONSUMER })
  await auto.connect()
  await auto.subscribe({ topics: [topic], fromBeginning: false })
  await auto.run({ eachMessage: async ({ partition, message }) => { phase3.push(`${partition}/${message.offset}`) } })
  await waitFor(() => phase3.length >= PARTITIONS, 15000, `phase 3 records (${phase3.length}/${PARTITIONS})`)
  await sleep(200)
  await auto.disconnect() // commits what was consumed
  mark('phase3stopped')
  check(JSON.stringify(phase3.sort()) === JSON.stringify(['0/20', '1/20', '2/20', '3/20']), 'phase 3: only the new records', phase3)
  const final = (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions
  result.committedAfterPhase3 = final.sort((x, y) => x.partition - y.partition).map(c => c.offset)
  check(final.every(c => c.offset === String(2 * PER_PARTITION + 1)), 'auto-commit committed the log end', final)

  const listed = await admin.listGroups()
  check(listed.groups.some(g => g.groupId === groupId && g.protocolType === 'consumer'), 'listGroups lists the group', listed.groups)
  // (admin.setOffsets/resetOffsets are left out: each runs a paused kafkajs
  // consumer that sleeps maxWaitTimeInMs, 5 s, before it commits.)
  await admin.deleteGroups([groupId])
  const after = await admin.listGroups()
  check(!after.groups.some(g => g.groupId === groupId), 'deleteGroups removed the group')
  const gone = (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions
  check(gone.every(p => p.offset === '-1'), 'no committed offsets after deleteGroups', gone)
  await producer.disconnect()
  await admin.disconnect()
}

// --------------------------------------------------------- transactions
// Commit one transaction, abort one, commit one with the group's offsets
// (sendOffsets): a read_committed kafkajs consumer sees exactly the
// committed records, and the group's offset moves only with the commit.
async function transactions() {
  const topic = `kjs-txn-${RUN}`
  const groupId = `kjs-txn-group-${RUN}`
  result.topic = topic
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] })
  const producer = kafka.producer({
    transactionalId: `kjs-txn-${RUN}`, idempotent: true, maxInFlightRequests: 1,
  })
  await producer.connect()
  const messages = (tag, n) => Array.from({ length: n }, (_, i) => ({ partition: i % 2, value: `${tag}-${i}` }))
  let txn = await producer.transaction()
  await txn.send({ topic, messages: messages('commit1', 4) })
  await txn.commit()
  txn = await producer.transaction()
  await txn.send({ topic, messages: messages('abort', 3) })
  await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic, partitions: [{ partition: 0, offset: '99' }] }] })
  await txn.abort()
  txn = await producer.transaction()
  await txn.send({ topic, messages: messages('commit2', 2) })
  await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic, partitions: [{ partition: 0, offset: '3' }] }] })
  await txn.commit()
  await producer.disconnect()
  const committed = await admin.fetchOffsets({ groupId, topics: [topic] })
  result.groupOffsets = committed[0].partitions.map(p => [p.partition, p.offset]).sort()
  await admin.disconnect()
  const got = await consumeAll(topic, `kjs-txn-reader-${RUN}`, 6, { readUncommitted: false })
  result.readCommitted = got.map(({ partition, message }) => `${partition}:${message.value.toString()}`)
  check(got.length === 6, 'read_committed sees the 6 committed records', result.readCommitted)
}

// A compacted topic prepared (and cleaned) by tests/integration/test_compaction.py:
// read it from offset 0 to its end and report every record.
async function compacted() {
  const topic = 'kjs-compacted'
  const admin = kafka.admin()
  await admin.connect()
  const offsets = await admin.fetchTopicOffsets(topic)
  await admin.disconnect()
  const last = BigInt(offsets[0].high) - 1n
  const consumer = kafka.consumer({ groupId: `kjs-compacted-${RUN}`, ...FAST_CONSUMER })
  const got = []
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message) } })
  try {
    await waitFor(() => got.length > 0 && BigInt(got[got.length - 1].offset) >= last, 15000, `offset ${last} of ${topic}`)
  } finally {
    await consumer.disconnect()
  }
  result.records = got.map(m => ({
    offset: m.offset,
    key: m.key === null ? null : m.key.toString('base64'),
    value: m.value === null ? null : m.value.toString('base64'),
  }))
  const seen = got.map(m => BigInt(m.offset))
  check(seen.every((o, i) => i === 0 || o > seen[i - 1]), 'offsets increase', seen.slice(0, 10).map(String))
}

const SCENARIOS = { admin, roundtrip, idempotent, group, transactions, compacted }

async function main() {
  const started = Date.now()
  const fn = SCENARIOS[scenario]
  if (!fn) {
    result.failures.push(`unknown scenario ${scenario}; known: ${Object.keys(SCENARIOS).join(', ')}`)
  } else {
    try {
      await fn()
    } catch (e) {
      result.failures.push(`exception: ${e.name}: ${e.message}${e.type ? ` (${e.type})` : ''}`)
      result.stack = e.stack
    }
  }
  result.kafkajs = require('kafkajs/package.json').version
  result.node = process.version
  result.durationMs = Date.now() - started
  result.ok = result.failures.length === 0
  // exit only once stdout is flushed (a pipe): the result can be large
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(result.ok ? 0 : 1))
}

main()
