"""DescribeQuorum (key 55, v0-v2): the metadata quorum as its leader sees it (KIP-595).

What ``kafka-metadata-quorum describe --status/--replication`` and
``Admin.describeMetadataQuorum`` show.  As Kafka:

* DESCRIBE on the cluster is required, else CLUSTER_AUTHORIZATION_FAILED at the
  top level with no topics.
* The request must name exactly topic ``__cluster_metadata`` partition 0 (the
  name every Kafka client uses for the metadata log; Chronik's own is
  ``__chronik_metadata``), else each requested partition gets
  UNKNOWN_TOPIC_OR_PARTITION.
* Only the leader of the quorum knows its followers: in cluster mode a
  follower asks the Raft leader (the controller) over the replication port, as
  a Kafka broker forwards DescribeQuorum to the active controller.  With no
  leader known, or one that has just lost office, the partition gets
  NOT_LEADER_OR_FOLLOWER; when the leader does not answer in time,
  REQUEST_TIMED_OUT; the admin client retries both.
* The answer: leader id, leader epoch (the Raft term; 0 on a single node,
  where no election ever happens), high watermark (the committed end of the
  metadata log), and every voter with its durable log end as the leader knows
  it and (v1, KIP-836) the leader's wall-clock times of its last fetch (its
  last successful answer to an append) and of when it was last caught up; the
  leader's own are the time of the answer, -1 means unknown (a follower not
  heard from since the leader took office).  Observers: none, every Chronik
  node is a voter.  v2 (KIP-853): voters have no directory id (Kafka's zero
  UUID, as for voters from static configuration, which Chronik's peers are),
  and ``nodes`` gives each voter's Raft endpoint, its replication address, as
  listener ``REPLICATION`` (none on a single node, which has no Raft port).
"""

from __future__ import annotations

from typing import Any

from ..metadata.acls import AclOperation, ResourceType
from ..metadata.view import QuorumReplica, QuorumUnavailable
from ..protocol import ErrorCode
from .registry import RequestContext, handles

CLUSTER_METADATA_TOPIC = "__cluster_metadata"
"""The topic name Kafka's clients ask DescribeQuorum for (partition 0)."""
RAFT_LISTENER = "REPLICATION"
"""The listener name under which a voter's Raft endpoint (its replication address) is given."""


@handles(55, 0, 2)
async def handle_describe_quorum(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):
        return ctx.respond(error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                           error_message=f"{ctx.principal} may not DESCRIBE the cluster", topics=[], nodes=[])
    topics = request.topics
    if not (len(topics) == 1 and topics[0].topic_name == CLUSTER_METADATA_TOPIC
            and [p.partition_index for p in topics[0].partitions] == [0]):
        return ctx.respond(error_code=0, error_message=None, nodes=[], topics=[
            {"topic_name": t.topic_name, "partitions": [
                _partition_error(p.partition_index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                 f"the metadata quorum is {CLUSTER_METADATA_TOPIC} partition 0")
                for p in t.partitions]}
            for t in topics])
    try:
        info = await ctx.broker.describe_quorum()
    except QuorumUnavailable as exc:
        return ctx.respond(error_code=0, error_message=None, nodes=[], topics=[
            {"topic_name": CLUSTER_METADATA_TOPIC, "partitions": [_partition_error(0, exc.error, exc.message)]}])
    peers = {peer.id: peer.replication for peer in ctx.broker.config.peers} if ctx.broker.consensus is not None else {}
    partition = {
        "partition_index": 0, "error_code": 0, "error_message": None, "leader_id": info.leader_id,
        "leader_epoch": info.leader_epoch, "high_watermark": info.high_watermark,
        "current_voters": [_replica(voter) for voter in info.voters], "observers": [],
    }
    nodes = [{"node_id": voter.replica_id, "listeners": [
                 {"name": RAFT_LISTENER, "host": peers[voter.replica_id].host, "port": peers[voter.replica_id].port}]}
             for voter in info.voters if voter.replica_id in peers]
    return ctx.respond(error_code=0, error_message=None, nodes=nodes,
                       topics=[{"topic_name": CLUSTER_METADATA_TOPIC, "partitions": [partition]}])


def _replica(voter: QuorumReplica) -> dict[str, Any]:
    return {"replica_id": voter.replica_id, "replica_directory_id": None, "log_end_offset": voter.log_end_offset,
            "last_fetch_timestamp": voter.last_fetch_timestamp,
            "last_caught_up_timestamp": voter.last_caught_up_timestamp}


def _partition_error(index: int, error: int, message: str) -> dict[str, Any]:
    """A partition that could not be described (Kafka fills in no leader or voters)."""
    return {"partition_index": index, "error_code": int(error), "error_message": message, "leader_id": -1,
            "leader_epoch": -1, "high_watermark": -1, "current_voters": [], "observers": []}
