"""Errors of the transaction APIs as each version expects them (no API of its own).

KIP-588 added PRODUCER_FENCED to InitProducerId v4, AddPartitionsToTxn v2,
AddOffsetsToTxn v2, EndTxn v2 and TxnOffsetCommit v3; older versions are told
INVALID_PRODUCER_EPOCH, as Kafka does.
"""

from __future__ import annotations

from ..protocol import ErrorCode


def fenced_for_version(error: ErrorCode, api_version: int, first_fenced_version: int) -> ErrorCode:
    if error == ErrorCode.PRODUCER_FENCED and api_version < first_fenced_version:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return error
