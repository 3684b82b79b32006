from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronik.protocol import (
    BATCH_HEADER_BYTES,
    Compression,
    ControlRecordType,
    CorruptRecord,
    ErrorCode,
    InvalidRecord,
    ProtocolError,
    Record,
    RecordHeader,
    RecordTooLarge,
    TimestampType,
    UnsupportedCompressionType,
    assign_offsets,
    compute_crc,
    control_record,
    control_record_type,
    decode_records,
    encode_batch,
    parse_batch_header,
    set_log_append_time,
    set_partition_leader_epoch,
    split_batches,
    validate_batch,
)

from . import real_clients as rc

RECORDS = [
    Record(
        0, 1_700_000_000_000, b"key", b"value" * 40, (RecordHeader("trace", b"\x01\x02"), RecordHeader("empty", None))
    ),
    Record(1, 1_700_000_000_005, None, b"no key"),
    Record(2, 1_699_999_999_990, b"tombstone", None),  # timestamps need not increase
    Record(3, 1_700_000_000_001, None, None, (RecordHeader("ключ", b""),)),
]


def plain(records: list[Record]) -> list[tuple[object, ...]]:
    return [(r.offset, r.timestamp, r.key, r.value, [(h.key, h.value) for h in r.headers]) for r in records]


def resealed(batch: bytearray) -> bytearray:
    struct.pack_into(">I", batch, 17, compute_crc(batch))
    return batch


# --- batches from real client encoders --------------------------------------------------------


CLIENT_CODECS = [("kafka-python", c) for c in (0, 1, 3, 4)] + [("aiokafka", c) for c in (0, 1, 2, 3, 4)]


@pytest.mark.parametrize(("client", "codec"), CLIENT_CODECS)
def test_batches_built_by_real_clients(client: str, codec: int) -> None:
    builder_class = rc.KafkaPythonBatchBuilder if client == "kafka-python" else rc.AiokafkaBatchBuilder
    builder = builder_class(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=42,
        producer_epoch=1,
        base_sequence=7,
        batch_size=1 << 20,
    )
    for record in RECORDS:
        builder.append(
            record.offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=[(h.key, h.value) for h in record.headers],
        )
    batch = bytes(builder.build())
    header = validate_batch(batch)
    assert (header.compression, header.records_count, header.last_offset_delta) == (codec, 4, 3)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 1, 7)
    assert (header.base_timestamp, header.max_timestamp) == (RECORDS[0].timestamp, RECORDS[1].timestamp)
    assert header.timestamp_type is TimestampType.CREATE_TIME and not header.is_control and not header.is_transactional
    assert plain(decode_records(batch)) == plain(RECORDS)


def test_java_style_snappy_uses_xerial_framing_and_raw_snappy_is_accepted_too() -> None:
    builder = rc.AiokafkaBatchBuilder(
        magic=2,
        compression_type=2,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, timestamp=1, key=None, value=b"v" * 100_000, headers=[])  # several 32 KiB xerial blocks
    xerial = bytes(builder.build())
    assert xerial[BATCH_HEADER_BYTES : BATCH_HEADER_BYTES + 8] == b"\x82SNAPPY\x00"
    assert decode_records(xerial)[0].value == b"v" * 100_000
    raw = encode_batch([Record(0, 1, None, b"v" * 100_000)], compression=Compression.SNAPPY, snappy_framing="raw")
    assert raw[BATCH_HEADER_BYTES : BATCH_HEADER_BYTES + 8] != b"\x82SNAPPY\x00"
    assert decode_records(raw)[0].value == b"v" * 100_000


@pytest.mark.parametrize("compression", list(Compression))
def test_encoded_batches_are_read_by_real_clients(compression: Compression) -> None:
    batch = bytes(encode_batch(RECORDS, compression=compression, producer_id=9, producer_epoch=2, base_sequence=0))
    readers = [rc.AiokafkaBatch] + ([rc.KafkaPythonBatch] if compression is not Compression.SNAPPY else [])
    for reader in readers:  # kafka-python needs python-snappy, not installed
        parsed = reader(batch)
        assert parsed.validate_crc()
        got = [(r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for r in parsed]
        assert got == plain(RECORDS)
    assert plain(decode_records(batch)) == plain(RECORDS)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [21, 22, 23, 30, 40, 50, 56, 60, 61, 80, -1])
def test_a_flipped_byte_under_the_crc_is_a_corrupt_message(position: int) -> None:
    batch = encode_batch(RECORDS)
    batch[position] ^= 0x04
    with pytest.raises(CorruptRecord, match="CRC") as caught:
        validate_batch(batch)
    assert caught.value.error_code == ErrorCode.CORRUPT_MESSAGE


@pytest.mark.parametrize("position", [0, 7, 12, 15])
def test_bytes_outside_the_crc_can_change_freely(position: int) -> None:
    batch = encode_batch(RECORDS)
    batch[position] ^= 0x55
    validate_batch(batch)


def test_wrong_magic_and_wrong_length_are_rejected() -> None:
    batch = encode_batch(RECORDS)
    batch[16] = 1
    with pytest.raises(InvalidRecord, match="magic 1") as caught:
        validate_batch(batch)
    assert caught.value.error_code == ErrorCode.INVALID_RECORD
    with pytest.raises(CorruptRecord, match="batchLength"):
        validate_batch(encode_batch(RECORDS) + b"\x00")
    with pytest.raises(CorruptRecord, match="too few"):
        validate_batch(encode_batch(RECORDS)[:60])


def test_record_count_must_match_the_offset_range() -> None:
    batch = encode_batch(RECORDS)
    struct.pack_into(">i", batch, 57, 3)
    with pytest.raises(InvalidRecord, match="counts 3 records"):
        validate_batch(resealed(batch))


def test_unknown_compression_id() -> None:
    batch = encode_batch(RECORDS)
    batch[22] |= 0x05
    with pytest.raises(UnsupportedCompressionType) as caught:
        validate_batch(resealed(batch))
    assert caught.value.error_code == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE


# --- in-place rewrites -------------------------------------------------------------------------


def test_assigning_offsets_keeps_the_producers_crc() -> None:
    batch = encode_batch(RECORDS, compression=Compression.LZ4)
    crc_before = parse_batch_header(batch).crc
    assign_offsets(batch, 1_000_000)
    header = validate_batch(batch)
    assert (header.crc, header.base_offset) == (crc_before, 1_000_000)
    assert (header.last_offset, header.next_offset) == (1_000_003, 1_000_004)
    assert [r.offset for r in decode_records(batch)] == [1_000_000, 1_000_001, 1_000_002, 1_000_003]


def test_setting_the_partition_leader_epoch_keeps_the_crc() -> None:
    batch = encode_batch(RECORDS)
    set_partition_leader_epoch(batch, 17)
    assert validate_batch(batch).partition_leader_epoch == 17


def test_log_append_time_rewrites_max_timestamp_and_the_crc_only() -> None:
    batch = encode_batch(RECORDS, compression=Compression.ZSTD)
    before = bytes(batch)
    set_log_append_time(batch, 1_800_000_000_000)
    header = validate_batch(batch)
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert header.max_timestamp == 1_800_000_000_000
    assert header.compression is Compression.ZSTD and header.base_timestamp == RECORDS[0].timestamp
    assert batch[BATCH_HEADER_BYTES:] == before[BATCH_HEADER_BYTES:]  # not recompressed
    assert [r.timestamp for r in decode_records(batch)] == [1_800_000_000_000] * 4
    assert rc.AiokafkaBatch(bytes(batch)).validate_crc()


# --- splitting a produce request's records field ---------------------------------------------


def test_split_gives_writable_views_into_the_records_field() -> None:
    first = encode_batch(RECORDS[:2])
    second = encode_batch([Record(0, 5, None, b"x")], compression=Compression.GZIP)
    records = bytearray(first + second)
    batches = split_batches(records, max_batch_bytes=1 << 20)
    assert [bytes(b) for b in batches] == [bytes(first), bytes(second)]
    assign_offsets(batches[1], 77)
    assert parse_batch_header(records, len(first)).base_offset == 77
    assert split_batches(b"", 100) == []


@pytest.mark.parametrize(
    ("records", "error"),
    [
        (encode_batch(RECORDS)[:-1], CorruptRecord),  # truncated batch
        (encode_batch(RECORDS) + b"\x00" * 5, CorruptRecord),  # trailing bytes
        (encode_batch(RECORDS) + b"\x00" * 80, CorruptRecord),  # trailing zeros: batchLength 0
        (b"\x00" * 8 + b"\x00\x00\x00\x14" + b"\x00" * 4 + b"\x01" + b"\x00" * 19, InvalidRecord),  # magic v1 message
    ],
)
def test_split_rejects_malformed_records_fields(records: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        split_batches(records, max_batch_bytes=1 << 20)


def test_split_rejects_batches_over_the_limit() -> None:
    batch = encode_batch(RECORDS)
    with pytest.raises(RecordTooLarge) as caught:
        split_batches(batch, max_batch_bytes=len(batch) - 1)
    assert caught.value.error_code == ErrorCode.MESSAGE_TOO_LARGE


# --- control and transactional batches ---------------------------------------------------------


def test_transaction_markers() -> None:
    batch = encode_batch(
        [control_record(ControlRecordType.COMMIT, coordinator_epoch=3, offset=10, timestamp=5)],
        is_control=True,
        is_transactional=True,
        producer_id=7,
        producer_epoch=1,
    )
    header = validate_batch(batch)
    assert header.is_control and header.is_transactional and header.producer_id == 7
    [marker] = decode_records(batch)
    assert control_record_type(marker) == ControlRecordType.COMMIT
    parsed = rc.AiokafkaBatch(bytes(batch))
    assert parsed.is_control_batch and parsed.is_transactional
    with pytest.raises(CorruptRecord):
        control_record_type(Record(0, 0, b"\x00", None))


def test_transactional_data_batches_keep_their_flags() -> None:
    batch = encode_batch(RECORDS, is_transactional=True, producer_id=1, producer_epoch=0, base_sequence=0)
    header = validate_batch(batch)
    assert header.is_transactional and not header.is_control


# --- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [c for c in Compression if c is not Compression.NONE])
def test_decompression_is_bounded(compression: Compression) -> None:
    batch = encode_batch([Record(0, 0, None, bytes(3 * 1024 * 1024))], compression=compression)
    assert len(batch) < 200_000
    with pytest.raises(CorruptRecord, match="expand past"):
        decode_records(batch, max_uncompressed_bytes=1024 * 1024)
    assert len(decode_records(batch, max_uncompressed_bytes=4 * 1024 * 1024)[0].value or b"") == 3 * 1024 * 1024


def test_encode_batch_rejects_empty_and_unordered_records() -> None:
    with pytest.raises(ValueError):
        encode_batch([])
    with pytest.raises(ValueError, match="increase"):
        encode_batch([Record(5, 0, None, None), Record(5, 0, None, None)])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        split_batches(data, 1 << 20)
    with contextlib.suppress(ProtocolError):
        validate_batch(data)
    with contextlib.suppress(ProtocolError):
        decode_records(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(Compression)), st.data())
def test_mutated_batches_decode_or_raise_corrupt_record(compression: Compression, data: st.DataObject) -> None:
    batch = encode_batch(RECORDS, compression=compression)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(BATCH_HEADER_BYTES - 4, len(batch) - 1))  # recordsCount and records
        batch[position] = data.draw(st.integers(0, 255))
    batch = resealed(batch[: data.draw(st.integers(BATCH_HEADER_BYTES, len(batch)))])
    struct.pack_into(">i", batch, 8, len(batch) - 12)
    with contextlib.suppress(ProtocolError):
        decode_records(batch)
