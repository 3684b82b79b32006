from __future__ import annotations

from kio.schema.errors import ErrorCode as KioErrorCode

from chronik.protocol import (
    CorruptRecord,
    ErrorCode,
    FrameTooLarge,
    InvalidFrame,
    InvalidRecord,
    MalformedMessage,
    ProtocolError,
    RecordTooLarge,
    UnsupportedCompressionType,
    UnsupportedVersion,
)


def test_codes_names_and_retriability_match_kafkas_as_generated_into_kio() -> None:
    kio = {code.value: (code.name.upper(), code.retriable) for code in KioErrorCode}
    ours = {code.value: (code.name, code.retriable) for code in ErrorCode}
    assert ours == kio
    assert set(range(-1, 121)) <= set(ours)


def test_well_known_codes() -> None:
    assert (ErrorCode.CORRUPT_MESSAGE, ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNSUPPORTED_VERSION) == (2, 6, 35)
    assert ErrorCode.NOT_LEADER_OR_FOLLOWER.retriable and not ErrorCode.UNSUPPORTED_VERSION.retriable
    assert KioErrorCode.none == ErrorCode.NONE
    assert ErrorCode(KioErrorCode.corrupt_message) is ErrorCode.CORRUPT_MESSAGE


def test_each_protocol_error_carries_the_code_a_client_is_told() -> None:
    for framing_or_parsing in (InvalidFrame, FrameTooLarge, MalformedMessage):
        assert framing_or_parsing.error_code == ErrorCode.INVALID_REQUEST
    assert UnsupportedVersion(1, 99).error_code == ErrorCode.UNSUPPORTED_VERSION
    assert CorruptRecord.error_code == ErrorCode.CORRUPT_MESSAGE
    assert InvalidRecord.error_code == ErrorCode.INVALID_RECORD
    assert RecordTooLarge(2, 1).error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert UnsupportedCompressionType.error_code == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    for error in (InvalidFrame, MalformedMessage, UnsupportedVersion, CorruptRecord, InvalidRecord, RecordTooLarge):
        assert issubclass(error, ProtocolError)
