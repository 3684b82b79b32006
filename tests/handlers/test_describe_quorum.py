"""The DescribeQuorum handler's answers for each outcome of ``BrokerServices.describe_quorum``,
against stand-in services (the real node's answers are in tests/integration/test_metadata_quorum.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from chronik.config import HostPort, Peer
from chronik.handlers.describe_quorum import handle_describe_quorum
from chronik.handlers.registry import RequestContext
from chronik.metadata.view import QuorumInfo, QuorumReplica, QuorumUnavailable
from chronik.protocol import ErrorCode, RequestHeader, request_schema
from chronik.protocol.build import build

PEERS = [Peer(i, HostPort("10.0.0.%d" % i, 9092), HostPort("10.0.0.%d" % i, 9093)) for i in (1, 2, 3)]
INFO = QuorumInfo(2, 7, 40, (QuorumReplica(1, 38, 1_000, 900), QuorumReplica(2, 40, 2_000, 2_000),
                             QuorumReplica(3, -1, -1, -1)))


async def describe(version: int, outcome: QuorumInfo | QuorumUnavailable, *, cluster: bool = True) -> Any:
    async def describe_quorum() -> QuorumInfo:
        if isinstance(outcome, QuorumUnavailable):
            raise outcome
        return outcome

    services = SimpleNamespace(authorizer=None, describe_quorum=describe_quorum, config=SimpleNamespace(peers=PEERS),
                               consensus=object() if cluster else None)
    ctx = RequestContext(services, RequestHeader(55, version, 1, "test", 2, 0), "10.0.0.9")  # type: ignore[arg-type]
    request = build(request_schema(55, version), topics=[{"topic_name": "__cluster_metadata", "partitions": [
        {"partition_index": 0}]}])
    return await handle_describe_quorum(ctx, request)


@pytest.mark.parametrize("version", [0, 1, 2])
async def test_the_leaders_view_in_every_version(version: int) -> None:
    answer = await describe(version, INFO)
    (partition,) = answer.topics[0].partitions
    assert (partition.error_code, partition.leader_id, partition.leader_epoch, partition.high_watermark) == (0, 2, 7, 40)
    assert [(v.replica_id, v.log_end_offset) for v in partition.current_voters] == [(1, 38), (2, 40), (3, -1)]
    if version >= 1:
        assert [(v.last_fetch_timestamp, v.last_caught_up_timestamp) for v in partition.current_voters] == [
            (1_000, 900), (2_000, 2_000), (-1, -1)]
    if version >= 2:
        assert [(n.node_id, [(lst.name, lst.host, lst.port) for lst in n.listeners]) for n in answer.nodes] == [
            (i, [("REPLICATION", f"10.0.0.{i}", 9093)]) for i in (1, 2, 3)]


async def test_a_single_node_has_no_raft_endpoint() -> None:
    answer = await describe(2, QuorumInfo(1, 0, 5, (QuorumReplica(1, 5, 3, 3),)), cluster=False)
    assert answer.nodes == () and answer.topics[0].partitions[0].leader_id == 1


@pytest.mark.parametrize("error", [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.REQUEST_TIMED_OUT])
@pytest.mark.parametrize("version", [0, 2])
async def test_no_leader_to_answer_is_a_partition_error(version: int, error: ErrorCode) -> None:
    answer = await describe(version, QuorumUnavailable(error, "controller 2 did not answer"))
    assert answer.error_code == 0
    (partition,) = answer.topics[0].partitions
    assert (partition.partition_index, partition.error_code, partition.current_voters) == (0, error, ())
    if version >= 2:
        assert partition.error_message == "controller 2 did not answer"
