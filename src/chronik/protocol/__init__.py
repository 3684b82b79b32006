"""The Kafka wire protocol, sans-I/O: bytes in, objects out; objects in, bytes out.

Nothing here reads a socket, a file or a clock, and nothing imports trio or
os: a connection task feeds received bytes in and writes the returned buffers
out, and any byte split (down to one byte at a time) gives the same result.

Layering (dependencies point down)::

    messages   decode_request_frame / decode_request / encode_response
               (and decode_response / encode_request, for clients)
    prescan    bounds-checked walk of a body before kio parses it; strips
               unknown tagged fields (KIP-482)
    headers    request header v0-v2, response header v0-v1, which version
               each API version uses
    apis       the API table: kio's schema classes per (api_key, version)
    framing    INT32 size-prefixed frames: FrameDecoder, encode_frame
    records    record batch v2: header, CRC-32C, in-place offset/epoch/
               LogAppendTime rewrites, record decoding, compression codecs
    primitives big-endian integers and varints
    errors     ErrorCode, and the ProtocolError family (each with the
               ErrorCode a client is told)

A request's life: ``FrameDecoder`` yields a payload; ``peek_request_ids``
reads api key, version and correlation id (available even when the version is
unsupported); ``decode_request_frame`` parses header and body into a kio
object; the handler's kio response goes through ``encode_response`` and
``encode_frame`` into a list of buffers for the socket.  The produce path
splits the ``records`` field with ``split_batches``, checks each batch with
``validate_batch``, and stamps offsets with ``assign_offsets``.

The names from ``apis``, ``headers`` and ``messages`` load at their first
use (PEP 562 ``__getattr__``): they import kio's schema classes, about 0.2 s
of CPU (more with ``hypothesis`` installed, which kio's types then import),
which a process that only needs ``records`` -- the log cleaner's child
process -- should not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

from .errors import (
    CorruptRecord,
    ErrorCode,
    FrameTooLarge,
    InvalidFrame,
    InvalidRecord,
    MalformedMessage,
    ProtocolError,
    RecordTooLarge,
    TlsHandshake,
    UnsupportedCompressionType,
    UnsupportedVersion,
)
from .framing import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, encode_frame
from .primitives import BytesLike
from .records import (
    BATCH_HEADER_BYTES,
    DEFAULT_MAX_UNCOMPRESSED_BYTES,
    BatchHeader,
    Compression,
    ControlRecordType,
    Record,
    RecordHeader,
    RecordScan,
    TimestampType,
    assign_offsets,
    compute_crc,
    control_record,
    control_record_coordinator_epoch,
    control_record_type,
    decode_records,
    encode_batch,
    first_null_key,
    parse_batch_header,
    rebuild_batch,
    recompress_batch,
    records_data,
    scan_records,
    set_log_append_time,
    set_partition_leader_epoch,
    split_batches,
    validate_batch,
)

if TYPE_CHECKING:
    from .apis import ApiVersionRange, api_version_range, known_api_versions, request_schema, response_schema
    from .headers import (
        RequestHeader,
        RequestIds,
        encode_request_header,
        encode_response_header,
        parse_request_header,
        parse_response_header,
        peek_request_ids,
        request_header_version,
        response_header_version,
    )
    from .messages import BufferList, decode_request, decode_request_frame, decode_response, encode_request, encode_response

_LAZY_NAMES, __getattr__ = lazy_exports(__name__, globals(), {
    # module: the names it exports here, imported at the first use of one of them
    ".apis": ("ApiVersionRange", "api_version_range", "known_api_versions", "request_schema", "response_schema"),
    ".headers": ("RequestHeader", "RequestIds", "encode_request_header", "encode_response_header",
                 "parse_request_header", "parse_response_header", "peek_request_ids", "request_header_version",
                 "response_header_version"),
    ".messages": ("BufferList", "decode_request", "decode_request_frame", "decode_response", "encode_request",
                  "encode_response"),
})


__all__ = [
    "BATCH_HEADER_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_UNCOMPRESSED_BYTES",
    "ApiVersionRange",
    "BatchHeader",
    "BufferList",
    "BytesLike",
    "Compression",
    "ControlRecordType",
    "CorruptRecord",
    "ErrorCode",
    "FrameDecoder",
    "FrameTooLarge",
    "InvalidFrame",
    "InvalidRecord",
    "MalformedMessage",
    "ProtocolError",
    "Record",
    "RecordHeader",
    "RecordScan",
    "RecordTooLarge",
    "RequestHeader",
    "RequestIds",
    "TimestampType",
    "TlsHandshake",
    "UnsupportedCompressionType",
    "UnsupportedVersion",
    "api_version_range",
    "assign_offsets",
    "compute_crc",
    "control_record",
    "control_record_coordinator_epoch",
    "control_record_type",
    "decode_records",
    "decode_request",
    "decode_request_frame",
    "decode_response",
    "encode_batch",
    "encode_frame",
    "encode_request",
    "encode_request_header",
    "encode_response",
    "encode_response_header",
    "known_api_versions",
    "first_null_key",
    "parse_batch_header",
    "rebuild_batch",
    "recompress_batch",
    "records_data",
    "scan_records",
    "parse_request_header",
    "parse_response_header",
    "peek_request_ids",
    "request_header_version",
    "request_schema",
    "response_header_version",
    "response_schema",
    "set_log_append_time",
    "set_partition_leader_epoch",
    "split_batches",
    "validate_batch",
]
