"""Consumer groups (Kafka's classic protocol): the sans-I/O group core and the coordinator that drives it."""

from .coordinator import GroupCoordinator, GroupDescription, GroupListing, MemberDescription, OffsetToCommit
from .group import Group, GroupState, JoinAnswer, JoinRequest, Reply, SyncAnswer

__all__ = [
    "Group",
    "GroupCoordinator",
    "GroupDescription",
    "GroupListing",
    "GroupState",
    "JoinAnswer",
    "JoinRequest",
    "MemberDescription",
    "OffsetToCommit",
    "Reply",
    "SyncAnswer",
]
