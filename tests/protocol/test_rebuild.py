"""Batches re-encoded by the broker: the cleaner's rebuild and a topic's recompression."""

from __future__ import annotations

import pytest

from chronik.protocol import Compression, CorruptRecord, Record, RecordHeader, compute_crc, decode_records, encode_batch
from chronik.protocol import first_null_key, parse_batch_header, rebuild_batch, recompress_batch, records_data
from chronik.protocol import scan_records

T0 = 1_700_000_000_000


def sample(compression: Compression = Compression.NONE) -> bytearray:
    records = [Record(i, T0 + 7 * i, b"k%d" % (i % 3), None if i == 4 else b"v" * (i * 40),
                      (RecordHeader("h", b"x"),) if i == 2 else ()) for i in range(6)]
    batch = encode_batch(records, compression=compression, producer_id=9, producer_epoch=1, base_sequence=5)
    batch[0:8] = (1000).to_bytes(8, "big")
    return batch


@pytest.mark.parametrize("compression", list(Compression))
def test_a_rebuilt_batch_keeps_offsets_timestamps_and_producer_fields(compression: Compression) -> None:
    batch = sample(compression)
    header = parse_batch_header(batch)
    data = records_data(batch, header)
    scan = scan_records(header, data)
    assert scan.keys == [b"k0", b"k1", b"k2", b"k0", b"k1", b"k2"]
    assert scan.offset_deltas == list(range(6)) and scan.tombstones == [4]
    assert scan.bounds[0] == 0 and scan.bounds[-1] == len(data) and len(scan.bounds) == 7
    for horizon in (None, T0 + 86_400_000):
        rebuilt = rebuild_batch(batch, header, data, scan, [1, 4], delete_horizon=horizon)
        new = parse_batch_header(rebuilt)
        assert compute_crc(rebuilt) == new.crc and new.size == len(rebuilt)
        assert (new.base_offset, new.last_offset, new.records_count) == (1000, 1005, 2)
        assert (new.producer_id, new.producer_epoch, new.base_sequence, new.compression) == (9, 1, 5, compression)
        assert new.has_delete_horizon == (horizon is not None)
        assert new.base_timestamp == (T0 if horizon is None else horizon)
        assert new.max_timestamp == T0 + 28
        assert [(r.offset, r.timestamp, r.key, r.value) for r in decode_records(rebuilt)] == [
            (1001, T0 + 7, b"k1", b"v" * 40), (1004, T0 + 28, b"k1", None)]


@pytest.mark.parametrize("target", list(Compression))
def test_recompression_changes_the_codec_only(target: Compression) -> None:
    batch = sample(Compression.GZIP)
    header = parse_batch_header(batch)
    again = recompress_batch(batch, header, target)
    new = parse_batch_header(again)
    assert new.compression is target and compute_crc(again) == new.crc
    assert new._replace(crc=0, batch_length=0, attributes=0) == header._replace(crc=0, batch_length=0, attributes=0)
    assert decode_records(again) == decode_records(batch)


def test_first_null_key() -> None:
    keyed = encode_batch([Record(0, T0, b"k", b"v"), Record(1, T0, None, b"v")])
    assert first_null_key(keyed, parse_batch_header(keyed)) == 1
    batch = sample()
    assert first_null_key(batch, parse_batch_header(batch)) is None


@pytest.mark.parametrize("compression", list(Compression))
def test_a_batch_rebuilt_with_no_record_is_kafkas_empty_batch(compression: Compression) -> None:
    batch = sample(compression)
    header = parse_batch_header(batch)
    data = records_data(batch, header)
    empty = rebuild_batch(batch, header, data, scan_records(header, data), [])
    new = parse_batch_header(empty)
    assert compute_crc(empty) == new.crc and new.size == len(empty)
    assert (new.base_offset, new.last_offset, new.records_count) == (1000, 1005, 0)
    assert (new.producer_id, new.producer_epoch, new.base_sequence, new.compression) == (9, 1, 5, Compression.NONE)
    assert new.max_timestamp == header.max_timestamp and decode_records(empty) == []


@pytest.mark.parametrize("value_bytes", [0, 30, 200, 9000, 70000])
def test_the_scan_reads_every_varint_width(value_bytes: int) -> None:
    """Record lengths, offsetDeltas, timestampDeltas and key lengths of one, two and more bytes
    (the scan decodes one- and two-byte varints inline and the others the slow way)."""
    records = [Record(n * 37, T0 + n * 5000 - 99, (b"k" * (n % 90)) if n % 7 else None,
                      None if n % 11 == 3 else b"v" * value_bytes) for n in range(300)]
    batch = encode_batch(records)
    header = parse_batch_header(batch)
    data = records_data(batch, header)
    scan = scan_records(header, data)
    assert scan.keys == [r.key for r in records]
    assert scan.offset_deltas == [r.offset for r in records]
    assert scan.tombstones == [n for n, r in enumerate(records) if r.value is None]
    kept = list(range(0, 300, 3))
    rebuilt = rebuild_batch(batch, header, data, scan, kept)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in decode_records(rebuilt)] == [
        (records[n].offset, records[n].timestamp, records[n].key, records[n].value) for n in kept]
    assert parse_batch_header(rebuilt).max_timestamp == max(records[n].timestamp for n in kept)


def test_a_truncated_record_is_corrupt() -> None:
    batch = encode_batch([Record(0, T0, b"key", b"value"), Record(1, T0, b"key", b"value")])
    header = parse_batch_header(batch)
    data = bytes(records_data(batch, header))
    for cut in range(1, len(data)):
        with pytest.raises(CorruptRecord):
            scan_records(header, data[:cut])
