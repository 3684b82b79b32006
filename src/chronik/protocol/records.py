"""Kafka record batches, magic v2 (``DefaultRecordBatch``), on stored bytes.

Batch layout, all integers big-endian::

    offset  size  field
         0     8  baseOffset             first offset; assigned by the broker
         8     4  batchLength            bytes after this field (batch size - 12)
        12     4  partitionLeaderEpoch   set by the broker
        16     1  magic                  2
        17     4  crc                    CRC-32C (Castagnoli), unsigned, of bytes 21..end
        21     2  attributes             bits 0-2 compression (0 none, 1 gzip, 2 snappy,
                                         3 lz4, 4 zstd), 3 timestamp type (1 = LogAppendTime),
                                         4 transactional, 5 control, 6 delete horizon set
        23     4  lastOffsetDelta
        27     8  baseTimestamp
        35     8  maxTimestamp
        43     8  producerId
        51     2  producerEpoch
        53     4  baseSequence
        57     4  recordsCount
        61     -  records, compressed as a whole when attributes say so

Record layout (varints are zig-zag; a length of -1 means null)::

    length VARINT | attributes INT8 | timestampDelta VARLONG | offsetDelta VARINT |
    keyLength VARINT | key | valueLength VARINT | value |
    headerCount VARINT | (keyLength VARINT | key UTF-8 | valueLength VARINT | value)*

Invariants the broker relies on:

* baseOffset, batchLength, partitionLeaderEpoch and magic are outside the CRC,
  so offsets and the leader epoch are assigned by overwriting bytes in place
  (:func:`assign_offsets`, :func:`set_partition_leader_epoch`) and the
  producer's CRC stays valid.  Switching to LogAppendTime rewrites attributes
  and maxTimestamp, which are inside it, so :func:`set_log_append_time`
  recomputes the CRC.
* A producer's batch is stored as sent and served as stored unless the topic
  says otherwise: :func:`rebuild_batch` re-encodes one for the log cleaner
  (fewer records, same base and last offset, as Kafka's ``filterTo``) and
  :func:`recompress_batch` for a topic whose ``compression.type`` names a
  codec.  Records are otherwise only decoded to answer ListOffsets by
  timestamp, to check keys on compacted topics, and in tests.
* A control batch (transaction marker) holds control records whose key is
  ``version INT16 | type INT16`` and value ``version INT16 | coordinatorEpoch INT32``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from crc32c import crc32c

from .errors import CorruptRecord, InvalidRecord, RecordTooLarge, UnsupportedCompressionType
from .primitives import (
    INT16,
    INT32,
    INT64,
    VARLONG_MAX_BYTES,
    BytesLike,
    encode_varint,
    read_unsigned_varint,
    read_varint,
)

MAGIC: Final = 2
BATCH_HEADER_BYTES: Final = 61
LOG_OVERHEAD: Final = 12
"""baseOffset and batchLength: the bytes of a batch not counted in batchLength."""
DEFAULT_MAX_UNCOMPRESSED_BYTES: Final = 64 * 1024 * 1024
"""Default cap on what one compressed batch may expand to when decoded."""

_LEGACY_RECORD_OVERHEAD: Final = 14
"""Smallest batchLength of any magic (a v0 message); below it the length itself is corrupt."""
_LEADER_EPOCH_OFFSET: Final = 12
_MAGIC_OFFSET: Final = 16
_CRC_OFFSET: Final = 17
_ATTRIBUTES_OFFSET: Final = 21
_MAX_TIMESTAMP_OFFSET: Final = 35

_COMPRESSION_MASK: Final = 0x07
_LOG_APPEND_TIME_BIT: Final = 0x08
_TRANSACTIONAL_BIT: Final = 0x10
_CONTROL_BIT: Final = 0x20
_DELETE_HORIZON_BIT: Final = 0x40

_HEADER: Final = struct.Struct(">qiibIhiqqqhii")
_UINT32: Final = struct.Struct(">I")
_XERIAL_MAGIC: Final = b"\x82SNAPPY\x00"
_XERIAL_HEADER: Final = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK_BYTES: Final = 32 * 1024
_CONTROL_RECORD_VERSION: Final = 0


class Compression(enum.IntEnum):
    """Compression codec ids of the attributes' low three bits."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


_MAX_COMPRESSION_ID: Final = max(Compression)


class TimestampType(enum.IntEnum):
    """Meaning of record timestamps (attribute bit 3)."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class ControlRecordType(enum.IntEnum):
    """Types of control records (``ControlRecordType.java``) a broker writes or reads."""

    ABORT = 0
    COMMIT = 1


class BatchHeader(NamedTuple):
    """The 61-byte header of a v2 record batch, as stored.

    A named tuple rather than a frozen dataclass: the produce path parses each
    batch's header more than once, and a tuple is built several times faster.
    """

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return LOG_OVERHEAD + self.batch_length

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """Offset of the record after this batch."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & _COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType.LOG_APPEND_TIME if self.attributes & _LOG_APPEND_TIME_BIT else TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)

    @property
    def has_delete_horizon(self) -> bool:
        """The base timestamp is a compaction delete horizon (KIP-534)."""
        return bool(self.attributes & _DELETE_HORIZON_BIT)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """One record header: a UTF-8 key and a nullable value."""

    key: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Record:
    """One record, with its absolute offset and timestamp (milliseconds)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[RecordHeader, ...] = ()


def parse_batch_header(buf: BytesLike, pos: int = 0) -> BatchHeader:
    """Parse the batch header at ``buf[pos]`` (the rest of the batch need not be there).

    Checks in Kafka's order: batchLength, then magic, then the v2 header size.

    :raises CorruptRecord: too few bytes, or a batchLength too small for a header.
    :raises InvalidRecord: magic is not 2.
    :raises UnsupportedCompressionType: the compression id is not one Kafka defines.
    """
    available = len(buf) - pos
    if available <= _MAGIC_OFFSET:
        raise CorruptRecord(f"{available} bytes at byte {pos} are too few for a record batch header")
    (batch_length,) = INT32.unpack_from(buf, pos + LOG_OVERHEAD - INT32.size)
    if batch_length < _LEGACY_RECORD_OVERHEAD:
        raise CorruptRecord(f"batchLength {batch_length} is smaller than any record batch")
    if buf[pos + _MAGIC_OFFSET] != MAGIC:
        raise InvalidRecord(f"record batch magic {buf[pos + _MAGIC_OFFSET]} is not supported, only {MAGIC}")
    if batch_length < BATCH_HEADER_BYTES - LOG_OVERHEAD:
        raise CorruptRecord(f"batchLength {batch_length} is smaller than a v2 batch header")
    if available < BATCH_HEADER_BYTES:
        raise CorruptRecord(f"{available} bytes at byte {pos} are too few for a record batch header")
    header = BatchHeader(*_HEADER.unpack_from(buf, pos))
    if header.attributes & _COMPRESSION_MASK > _MAX_COMPRESSION_ID:
        raise UnsupportedCompressionType(f"unknown compression id {header.attributes & _COMPRESSION_MASK}")
    return header


def split_batches(records: BytesLike, max_batch_bytes: int) -> list[memoryview]:
    """Split a produce ``records`` field into batches: views into ``records``, no copy.

    The field must be whole batches end to end; the views are writable when
    ``records`` is (a ``bytearray``), for the in-place rewrites below.

    :raises CorruptRecord: a batch is truncated or its length field is impossible.
    :raises InvalidRecord: a batch is not magic v2.
    :raises RecordTooLarge: a batch is larger than ``max_batch_bytes``.
    """
    view = memoryview(records)
    batches = []
    pos = 0
    while pos < len(view):
        size = parse_batch_header(view, pos).size
        if size > max_batch_bytes:
            raise RecordTooLarge(size, max_batch_bytes)
        if pos + size > len(view):
            raise CorruptRecord(f"record batch of {size} bytes at byte {pos} is truncated to {len(view) - pos}")
        batches.append(view[pos : pos + size])
        pos += size
    return batches


def compute_crc(batch: BytesLike) -> int:
    """CRC-32C of the batch from its attributes field to its end."""
    with memoryview(batch) as view:
        return crc32c(view[_ATTRIBUTES_OFFSET:])


def validate_batch(batch: BytesLike) -> BatchHeader:
    """Check one whole batch as a broker must before appending it.

    Checks magic, that batchLength matches the bytes given, the CRC-32C, the
    compression id, and (as Kafka's ``LogValidator`` does for produced batches)
    that recordsCount is positive and equals lastOffsetDelta + 1.  Whether a
    client may send a control or transactional batch is the caller's policy.

    :raises CorruptRecord: length or CRC mismatch.
    :raises InvalidRecord: wrong magic, inconsistent record count.
    :raises UnsupportedCompressionType: unknown compression id.
    """
    header = parse_batch_header(batch)
    if header.size != len(batch):
        raise CorruptRecord(f"batchLength says {header.size} bytes, the batch has {len(batch)}")
    actual = compute_crc(batch)
    if actual != header.crc:
        raise CorruptRecord(f"record batch CRC-32C is {actual:#010x}, stored {header.crc:#010x}")
    if header.records_count <= 0 or header.records_count != header.last_offset_delta + 1:
        raise InvalidRecord(
            f"record batch counts {header.records_count} records but lastOffsetDelta is {header.last_offset_delta}"
        )
    return header


def assign_offsets(batch: bytearray | memoryview, base_offset: int) -> None:
    """Overwrite baseOffset in place (bytes 0-7, outside the CRC)."""
    INT64.pack_into(batch, 0, base_offset)


def set_partition_leader_epoch(batch: bytearray | memoryview, leader_epoch: int) -> None:
    """Overwrite partitionLeaderEpoch in place (bytes 12-15, outside the CRC)."""
    INT32.pack_into(batch, _LEADER_EPOCH_OFFSET, leader_epoch)


def set_log_append_time(batch: bytearray | memoryview, timestamp_ms: int) -> None:
    """Mark the batch LogAppendTime with the given time, in place, and recompute the CRC.

    Like Kafka, only the timestamp-type bit and maxTimestamp change; readers
    then take maxTimestamp as every record's timestamp.
    """
    (attributes,) = INT16.unpack_from(batch, _ATTRIBUTES_OFFSET)
    INT16.pack_into(batch, _ATTRIBUTES_OFFSET, attributes | _LOG_APPEND_TIME_BIT)
    INT64.pack_into(batch, _MAX_TIMESTAMP_OFFSET, timestamp_ms)
    _UINT32.pack_into(batch, _CRC_OFFSET, compute_crc(batch))


def decode_records(batch: BytesLike, *, max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES) -> list[Record]:
    """Decode every record of one whole batch, decompressing it if needed.

    Does not check the CRC (see :func:`validate_batch`).  Snappy is accepted
    both raw (librdkafka) and in xerial framing (Java client); LZ4 is the
    frame format.

    :raises CorruptRecord: records do not parse, are fewer or more than
        recordsCount, or the batch expands past ``max_uncompressed_bytes``.
    """
    header = parse_batch_header(batch)
    if header.size != len(batch):
        raise CorruptRecord(f"batchLength says {header.size} bytes, the batch has {len(batch)}")
    data = memoryview(batch)[BATCH_HEADER_BYTES:]
    if header.compression is not Compression.NONE:
        data = memoryview(_decompress(header.compression, data, max_uncompressed_bytes))
    log_append_time = header.max_timestamp if header.timestamp_type is TimestampType.LOG_APPEND_TIME else None
    records = []
    pos = 0
    try:
        for _ in range(header.records_count):
            length, pos = read_varint(data, pos)
            end = pos + length
            if length < 0 or end > len(data):
                raise ValueError(f"record length {length} overruns the batch")
            record = _decode_record(data[:end], pos + 1, header, log_append_time)
            records.append(record)
            pos = end
    except ValueError as exc:
        raise CorruptRecord(f"record {len(records)} of the batch at offset {header.base_offset}: {exc}") from exc
    if pos != len(data):
        raise CorruptRecord(f"{len(data) - pos} bytes left after the {header.records_count} records of the batch")
    return records


class RecordScan(NamedTuple):
    """Where the records of a batch lie in its (decompressed) records data, column by column
    (:func:`scan_records`): lists rather than one object per record, so the log
    cleaner can test a whole batch at C speed (``map``/``zip`` over the columns).

    Record ``i`` is ``data[bounds[i]:bounds[i + 1]]`` (its length varint
    included); its offset is baseOffset + ``offset_deltas[i]``; its key is
    ``keys[i]`` (None: null); ``tombstones`` are the indexes of the records
    whose value is null, in order.
    """

    keys: list[bytes | None]
    offset_deltas: list[int]
    bounds: list[int]
    tombstones: list[int]


def records_data(batch: BytesLike, header: BatchHeader, *,
                 max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES) -> memoryview:
    """The records part of one whole batch, decompressed if needed.

    :raises CorruptRecord: the data does not decompress (or expands too far).
    """
    data = memoryview(batch)[BATCH_HEADER_BYTES:header.size]
    if header.compression is not Compression.NONE:
        data = memoryview(_decompress(header.compression, data, max_uncompressed_bytes))
    return data


def _slow_varint(data: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    raw, pos = read_unsigned_varint(data, pos, max_bytes)
    return (raw >> 1) ^ -(raw & 1), pos


def scan_records(header: BatchHeader, data: memoryview | bytes) -> RecordScan:
    """Locate every record of a batch in its :func:`records_data` without decoding values or headers.

    The log cleaner's hot loop (every record of a partition, once a pass) and
    the compacted-topic check on produce: varints of one and two bytes, the
    common cases, are decoded inline, the timestampDelta is skipped, not
    decoded, and nothing is allocated per record but its key.

    :raises CorruptRecord: a record does not parse, or the count disagrees with recordsCount.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    keys: list[bytes | None] = []
    deltas: list[int] = []
    bounds = [0]
    tombstones: list[int] = []
    add_key = keys.append
    add_delta = deltas.append
    add_bound = bounds.append
    pos = 0
    size = len(buf)
    n = 0
    try:
        for n in range(header.records_count):
            b = buf[pos]
            if b < 0x80:
                length = (b >> 1) ^ -(b & 1)
                pos += 1
            elif (c := buf[pos + 1]) < 0x80:  # most records are 64..8191 bytes long
                raw = (b & 0x7F) | (c << 7)
                length = (raw >> 1) ^ -(raw & 1)
                pos += 2
            else:
                length, pos = _slow_varint(buf, pos, 5)
            end = pos + length
            if length < 0 or end > size:
                raise ValueError(f"record length {length} overruns the batch")
            pos += 1  # the attributes byte
            while buf[pos] >= 0x80:  # skip the timestampDelta varlong
                pos += 1
            pos += 1
            b = buf[pos]
            if b < 0x80:
                add_delta((b >> 1) ^ -(b & 1))
                pos += 1
            elif (c := buf[pos + 1]) < 0x80:  # offsetDelta 64..8191
                raw = (b & 0x7F) | (c << 7)
                add_delta((raw >> 1) ^ -(raw & 1))
                pos += 2
            else:
                delta, pos = _slow_varint(buf, pos, 5)
                add_delta(delta)
            b = buf[pos]
            if b == 1:  # keyLength -1: a null key
                add_key(None)
                pos += 1
            else:
                if b < 0x80:
                    key_length = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    key_length, pos = _slow_varint(buf, pos, 5)
                key_end = pos + key_length
                if key_length < 0 or key_end > end:
                    raise ValueError(f"key length {key_length} overruns the record")
                add_key(buf[pos:key_end])
                pos = key_end
            if pos >= end:
                raise ValueError("record ends before its value")
            if buf[pos] == 1:  # valueLength -1 (the single byte 0x01): a tombstone
                tombstones.append(n)
            add_bound(end)
            pos = end
    except (ValueError, IndexError) as exc:
        raise CorruptRecord(f"record {n} of the batch at offset {header.base_offset}: {exc}") from exc
    if pos != size:
        raise CorruptRecord(f"{size - pos} bytes left after the {header.records_count} records of the batch")
    return RecordScan(keys, deltas, bounds, tombstones)


def first_null_key(batch: BytesLike, header: BatchHeader) -> int | None:
    """Index (in the batch) of the first record without a key, or None when every record has one."""
    keys = scan_records(header, records_data(batch, header)).keys
    return keys.index(None) if None in keys else None


def _snappy_framing(batch: BytesLike) -> Literal["xerial", "raw"]:
    with memoryview(batch) as view:
        start = view[BATCH_HEADER_BYTES:BATCH_HEADER_BYTES + len(_XERIAL_MAGIC)].tobytes()
    return "xerial" if start == _XERIAL_MAGIC else "raw"


def _record_timestamp(data: memoryview | bytes, start: int) -> tuple[int, int, int]:
    """Of the record at ``data[start:]``: where its attributes byte is, its timestampDelta
    and where the offsetDelta after it starts."""
    _, attributes_at = read_unsigned_varint(data, start, 5)
    timestamp_delta, after = read_varint(data, attributes_at + 1, VARLONG_MAX_BYTES)
    return attributes_at, timestamp_delta, after


def rebuild_batch(batch: BytesLike, header: BatchHeader, data: memoryview, scan: RecordScan, kept: Sequence[int], *,
                  delete_horizon: int | None = None) -> bytearray:
    """The batch with only the records ``kept`` (indexes into ``scan``, the
    :func:`scan_records` of ``data``, in increasing order), re-encoded.

    As Kafka's cleaner does: baseOffset and lastOffsetDelta stay (so offsets
    and the producer's sequence range are unchanged; recordsCount shrinks),
    the producer fields, leader epoch and attributes stay, the records are
    recompressed with the batch's codec, and maxTimestamp is recomputed over
    the kept records (kept as stored for LogAppendTime).  ``delete_horizon``
    (ms) marks the batch with a KIP-534 delete horizon: baseTimestamp becomes
    the horizon, attribute bit 6 is set and every record's timestampDelta is
    re-encoded so its timestamp is unchanged.  With no ``kept`` record the
    result is an empty batch (header only, uncompressed), as Kafka's cleaner
    keeps a producer's last batch.
    """
    if not kept:  # Kafka's RETAIN_EMPTY: only the header stays (a producer's last batch, for its state)
        out = bytearray(BATCH_HEADER_BYTES)
        _HEADER.pack_into(out, 0, header.base_offset, len(out) - LOG_OVERHEAD, header.partition_leader_epoch, MAGIC, 0,
                          header.attributes & ~_COMPRESSION_MASK, header.last_offset_delta, header.base_timestamp,
                          header.max_timestamp, header.producer_id, header.producer_epoch, header.base_sequence, 0)
        _UINT32.pack_into(out, _CRC_OFFSET, compute_crc(out))
        return out
    bounds = scan.bounds
    base_timestamp = header.base_timestamp
    attributes = header.attributes
    restamp = delete_horizon is not None and not header.has_delete_horizon
    shift = header.base_timestamp - delete_horizon if restamp and delete_horizon is not None else 0
    max_delta = None
    body = bytearray()
    for i in kept:
        start, end = bounds[i], bounds[i + 1]
        attributes_at, timestamp_delta, after = _record_timestamp(data, start)
        if max_delta is None or timestamp_delta > max_delta:
            max_delta = timestamp_delta
        if restamp:
            rest = bytearray(data[attributes_at:attributes_at + 1])
            rest += encode_varint(timestamp_delta + shift)
            rest += data[after:end]
            body += encode_varint(len(rest))
            body += rest
        else:
            body += data[start:end]
    if restamp and delete_horizon is not None:
        base_timestamp = delete_horizon
        attributes |= _DELETE_HORIZON_BIT
    if header.timestamp_type is TimestampType.LOG_APPEND_TIME:
        max_timestamp = header.max_timestamp
    else:
        assert max_delta is not None
        max_timestamp = header.base_timestamp + max_delta
    compression = header.compression
    framing = _snappy_framing(batch) if compression is Compression.SNAPPY else "xerial"
    out = bytearray(BATCH_HEADER_BYTES)
    out += _compress(compression, body, framing)
    _HEADER.pack_into(out, 0, header.base_offset, len(out) - LOG_OVERHEAD, header.partition_leader_epoch, MAGIC, 0,
                      attributes, header.last_offset_delta, base_timestamp, max_timestamp, header.producer_id,
                      header.producer_epoch, header.base_sequence, len(kept))
    _UINT32.pack_into(out, _CRC_OFFSET, compute_crc(out))
    return out


def recompress_batch(batch: BytesLike, header: BatchHeader, compression: Compression) -> bytearray:
    """The batch with its records in another codec (a topic's ``compression.type``); nothing else changes.

    :raises CorruptRecord: the records do not decompress.
    """
    data = records_data(batch, header)
    out = bytearray(BATCH_HEADER_BYTES)
    out += _compress(compression, bytearray(data), "xerial")
    attributes = (header.attributes & ~_COMPRESSION_MASK) | int(compression)
    _HEADER.pack_into(out, 0, header.base_offset, len(out) - LOG_OVERHEAD, header.partition_leader_epoch, MAGIC, 0,
                      attributes, header.last_offset_delta, header.base_timestamp, header.max_timestamp,
                      header.producer_id, header.producer_epoch, header.base_sequence, header.records_count)
    _UINT32.pack_into(out, _CRC_OFFSET, compute_crc(out))
    return out


def _decode_record(data: memoryview, pos: int, header: BatchHeader, log_append_time: int | None) -> Record:
    """Decode one record whose bytes end where ``data`` ends; ``pos`` is just past its attributes byte."""
    timestamp_delta, pos = read_varint(data, pos, VARLONG_MAX_BYTES)
    offset_delta, pos = read_varint(data, pos)
    key, pos = _read_nullable_bytes(data, pos)
    value, pos = _read_nullable_bytes(data, pos)
    header_count, pos = read_varint(data, pos)
    if header_count < 0 or header_count * 2 > len(data) - pos:
        raise ValueError(f"impossible record header count {header_count}")
    headers = []
    for _ in range(header_count):
        header_key, pos = _read_nullable_bytes(data, pos)
        if header_key is None:
            raise ValueError("null record header key")
        header_value, pos = _read_nullable_bytes(data, pos)
        headers.append(RecordHeader(header_key.decode("utf-8", "replace"), header_value))
    if pos != len(data):
        raise ValueError(f"record length disagrees with its content by {len(data) - pos} bytes")
    timestamp = header.base_timestamp + timestamp_delta if log_append_time is None else log_append_time
    return Record(header.base_offset + offset_delta, timestamp, key, value, tuple(headers))


def _read_nullable_bytes(data: memoryview, pos: int) -> tuple[bytes | None, int]:
    length, pos = read_varint(data, pos)
    if length == -1:
        return None, pos
    end = pos + length
    if length < -1 or end > len(data):
        raise ValueError(f"field length {length} overruns the record")
    return bytes(data[pos:end]), end


def _decompress(compression: Compression, data: memoryview, limit: int) -> bytes:
    try:
        match compression:
            case Compression.GZIP:
                return _gunzip(data, limit)
            case Compression.SNAPPY:
                return _unsnappy(data, limit)
            case Compression.LZ4:
                return _unlz4(data, limit)
            case Compression.ZSTD:
                return _unzstd(data, limit)
    except (zlib.error, RuntimeError, ValueError, struct.error) as exc:
        raise CorruptRecord(f"{compression.name} data does not decompress: {exc}") from exc
    raise AssertionError(f"not a compression codec: {compression!r}")


def _expansion_error(limit: int) -> CorruptRecord:
    return CorruptRecord(f"compressed records expand past {limit} bytes")


def _gunzip(data: memoryview, limit: int) -> bytes:
    out = bytearray()
    remaining: BytesLike = data
    while remaining:  # a gzip stream may hold several members
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out += member.decompress(remaining, limit + 1 - len(out))
        if len(out) > limit:
            raise _expansion_error(limit)
        if not member.eof:
            raise ValueError("truncated gzip stream")
        remaining = member.unused_data
    return bytes(out)


def _unsnappy(data: memoryview, limit: int) -> bytes:
    if data[: len(_XERIAL_MAGIC)].tobytes() != _XERIAL_MAGIC:
        return _unsnappy_raw(data, limit)
    # xerial framing (snappy-java): 16-byte header, then (INT32 length, raw block)*.
    out = bytearray()
    pos = len(_XERIAL_HEADER)
    while pos < len(data):
        (length,) = INT32.unpack_from(data, pos)
        pos += INT32.size
        if length < 0 or pos + length > len(data):
            raise ValueError(f"xerial snappy block of {length} bytes overruns the batch")
        out += _unsnappy_raw(data[pos : pos + length], limit - len(out))
        pos += length
    return bytes(out)


# The codec libraries other than zlib are imported on first use: most brokers
# (a test suite's, every fresh process) never meet a snappy, LZ4 or zstd batch,
# and loading cramjam, lz4 and zstandard costs 10-30 ms of start-up.


def _unsnappy_raw(block: memoryview, limit: int) -> bytes:
    import cramjam

    # The raw format starts with the uncompressed length: check it before allocating.
    declared, _ = read_unsigned_varint(block, 0)
    if declared > limit:
        raise _expansion_error(limit)
    try:
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as exc:
        raise ValueError(str(exc)) from exc


def _unlz4(data: memoryview, limit: int) -> bytes:
    import lz4.frame  # type: ignore[import-untyped]  # raises RuntimeError on bad data

    decompressor = lz4.frame.LZ4FrameDecompressor()
    out: bytes = decompressor.decompress(data, max_length=limit + 1)
    if len(out) > limit:
        raise _expansion_error(limit)
    if not decompressor.eof:
        raise ValueError("truncated LZ4 frame")
    return out


def _unzstd(data: memoryview, limit: int) -> bytes:
    # A truncated stream yields fewer bytes, not an error; the record count check catches it.
    import zstandard

    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
            while chunk := reader.read(limit + 1 - len(out)):
                out += chunk
                if len(out) > limit:
                    raise _expansion_error(limit)
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from exc
    return bytes(out)


def encode_batch(
    records: Sequence[Record],
    *,
    compression: Compression = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    is_transactional: bool = False,
    is_control: bool = False,
    snappy_framing: Literal["xerial", "raw"] = "xerial",
) -> bytearray:
    """Build a CreateTime record batch holding ``records``, for tests and internal writes.

    baseOffset and baseTimestamp are the first record's; offsets must increase.
    Snappy is written in xerial framing as the Java client does, or raw as
    librdkafka does.
    """
    if not records:
        raise ValueError("a record batch holds at least one record")
    base_offset = records[0].offset
    base_timestamp = records[0].timestamp
    body = bytearray()
    previous_offset = base_offset - 1
    for record in records:
        if record.offset <= previous_offset:
            raise ValueError(f"record offsets must increase: {record.offset} after {previous_offset}")
        previous_offset = record.offset
        body += _encode_record(record, base_offset, base_timestamp)
    payload = _compress(compression, body, snappy_framing)
    attributes = int(compression)
    if is_transactional:
        attributes |= _TRANSACTIONAL_BIT
    if is_control:
        attributes |= _CONTROL_BIT
    batch = bytearray(BATCH_HEADER_BYTES)
    batch += payload
    _HEADER.pack_into(
        batch,
        0,
        base_offset,
        len(batch) - LOG_OVERHEAD,
        partition_leader_epoch,
        MAGIC,
        0,
        attributes,
        records[-1].offset - base_offset,
        base_timestamp,
        max(record.timestamp for record in records),
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    )
    _UINT32.pack_into(batch, _CRC_OFFSET, compute_crc(batch))
    return batch


def _encode_nullable_bytes(value: bytes | None) -> bytes:
    return encode_varint(-1) if value is None else encode_varint(len(value)) + value


def _encode_record(record: Record, base_offset: int, base_timestamp: int) -> bytes:
    body = bytearray(b"\x00")  # record attributes: unused, always 0
    body += encode_varint(record.timestamp - base_timestamp)
    body += encode_varint(record.offset - base_offset)
    body += _encode_nullable_bytes(record.key)
    body += _encode_nullable_bytes(record.value)
    body += encode_varint(len(record.headers))
    for header in record.headers:
        body += _encode_nullable_bytes(header.key.encode())
        body += _encode_nullable_bytes(header.value)
    return encode_varint(len(body)) + body


def _compress(compression: Compression, data: bytearray, snappy_framing: Literal["xerial", "raw"]) -> bytes:
    if compression is Compression.SNAPPY:
        import cramjam
    elif compression is Compression.LZ4:
        import lz4.frame  # type: ignore[import-untyped]
    elif compression is Compression.ZSTD:
        import zstandard
    match compression:
        case Compression.NONE:
            return bytes(data)
        case Compression.GZIP:
            compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
            return compressor.compress(data) + compressor.flush()
        case Compression.SNAPPY if snappy_framing == "raw":
            return bytes(cramjam.snappy.compress_raw(data))
        case Compression.SNAPPY:
            out = bytearray(_XERIAL_HEADER)
            for start in range(0, len(data), _XERIAL_BLOCK_BYTES):
                block = bytes(cramjam.snappy.compress_raw(data[start : start + _XERIAL_BLOCK_BYTES]))
                out += INT32.pack(len(block)) + block
            return bytes(out)
        case Compression.LZ4:
            # Independent blocks and no content size, as Kafka's own LZ4 writer.
            compressed: bytes = lz4.frame.compress(data, block_linked=False, store_size=False)
            return compressed
        case Compression.ZSTD:
            return zstandard.ZstdCompressor().compress(data)
    raise AssertionError(f"not a compression codec: {compression!r}")


def control_record(control_type: ControlRecordType, coordinator_epoch: int, offset: int, timestamp: int) -> Record:
    """A transaction marker record, to put in a control batch (``is_control=True``)."""
    key = INT16.pack(_CONTROL_RECORD_VERSION) + INT16.pack(control_type)
    value = INT16.pack(_CONTROL_RECORD_VERSION) + INT32.pack(coordinator_epoch)
    return Record(offset, timestamp, key, value)


def control_record_type(record: Record) -> int:
    """The type of a record from a control batch (a :class:`ControlRecordType` value, or newer).

    :raises CorruptRecord: the key is too short to be a control record key.
    """
    if record.key is None or len(record.key) < 4:
        raise CorruptRecord(f"control record at offset {record.offset} has no valid key")
    (control_type,) = INT16.unpack_from(record.key, 2)
    return int(control_type)


def control_record_coordinator_epoch(record: Record) -> int:
    """The coordinator epoch a commit or abort marker record carries (its value: version, then the epoch).

    :raises CorruptRecord: the value is too short to be a marker's value.
    """
    if record.value is None or len(record.value) < 6:
        raise CorruptRecord(f"control record at offset {record.offset} has no valid marker value")
    (coordinator_epoch,) = INT32.unpack_from(record.value, 2)
    return int(coordinator_epoch)
