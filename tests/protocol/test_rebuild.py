"""Batches re-encoded by the broker: the cleaner's rebuild and a topic's recompression."""

from __future__ import annotations

import pytest

from chronik.protocol import Compression, Record, RecordHeader, compute_crc, decode_records, encode_batch
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
    scanned = scan_records(header, data)
    assert [(r.key, r.is_tombstone) for r in scanned] == [
        (b"k0", False), (b"k1", False), (b"k2", False), (b"k0", False), (b"k1", True), (b"k2", False)]
    kept = [scanned[1], scanned[4]]
    for horizon in (None, T0 + 86_400_000):
        rebuilt = rebuild_batch(batch, header, data, kept, delete_horizon=horizon)
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
    empty = rebuild_batch(batch, header, records_data(batch, header), [])
    new = parse_batch_header(empty)
    assert compute_crc(empty) == new.crc and new.size == len(empty)
    assert (new.base_offset, new.last_offset, new.records_count) == (1000, 1005, 0)
    assert (new.producer_id, new.producer_epoch, new.base_sequence, new.compression) == (9, 1, 5, Compression.NONE)
    assert new.max_timestamp == header.max_timestamp and decode_records(empty) == []
