"""What a request handler may use of its broker node: :class:`BrokerServices`.

Handlers are written against this protocol, never against the object that
assembles the node (:class:`chronik.broker.Broker` implements it, and
:func:`chronik.broker.open_broker` builds it); a test can hand a handler
anything with these members.  It is the handlers' whole view of the node:
the metadata image and a way to change it, the partition logs (through the
methods that know which ones this node serves), the group and transaction coordinators, the
configuration and the metrics.  Handlers never touch files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..config import BrokerConfig, HostPort
from ..groups import GroupCoordinator
from ..log.manager import LogManager
from ..log.partition import PartitionLog
from ..metadata import Command, MetadataImage, TopicImage
from ..metadata.placement import TopicRequest
from ..metadata.view import Origin, QuorumInfo
from ..metrics import BrokerMetrics
from ..protocol import ErrorCode
from ..txn import TransactionCoordinator
from ..security.authorizer import Authorizer

if TYPE_CHECKING:
    from ..cluster.node import ConsensusNode


@runtime_checkable
class BrokerServices(Protocol):
    """The broker node as the request handlers see it (see the module docstring)."""

    config: BrokerConfig
    node_id: int
    cluster_id: str
    advertised: HostPort
    """The address clients are told to connect to (the bound port once known)."""
    metrics: BrokerMetrics
    logs: LogManager
    groups: GroupCoordinator
    transactions: TransactionCoordinator
    consensus: "ConsensusNode | None"
    """The Raft voter in cluster mode; None on a single node."""
    authorizer: Authorizer | None
    """ACL enforcement (``authorizer.class.name``); None: every request is allowed
    (handlers ask through :meth:`~chronik.handlers.registry.RequestContext.authorized`)."""
    clock: Callable[[], float]
    """The wall clock, in seconds since the epoch (``time.time``; a simulation's own in tests)."""

    @property
    def image(self) -> MetadataImage:
        """The metadata as applied on this node so far."""
        ...

    @property
    def controller_id(self) -> int:
        """The controller's node id (-1: none known)."""
        ...

    def metadata_lag(self) -> str | None:
        """Why this node's metadata must not be acted on now; None when it is current enough."""
        ...

    async def submit(self, command: Command, origin: Origin | None = None) -> object:
        """Append a metadata command durably and apply it; raises CommandRejected (Kafka error name).

        ``origin``: the client whose request it is (``RequestContext.origin``), for the
        controller to authorize it with; None for a command the node writes on its own."""
        ...

    def missing_log_error(self, topic: str | None, partition: int,
                          unknown: ErrorCode = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) -> ErrorCode:
        """Why a partition has no log to serve here."""
        ...

    def led_log(self, topic: str, partition: int) -> PartitionLog | None:
        """The local log of a partition this node serves now; None if none."""
        ...

    async def partition_log(self, topic: str, partition: int) -> PartitionLog | None:
        """As :meth:`led_log`, after opening the logs the metadata has gained."""
        ...

    async def create_topic(self, request: TopicRequest, origin: Origin | None = None) -> TopicImage:
        """Create a topic for ``origin`` (as :meth:`submit`); raises CommandRejected (Kafka error name)."""
        ...

    async def auto_create_topic(self, name: str, origin: Origin | None = None) -> TopicImage | None:
        """Create ``name`` with the broker defaults for ``origin`` if auto-creation is on; None if not created."""
        ...

    def topic_config(self, topic: TopicImage) -> Mapping[str, str]:
        """Every topic config's effective value (the topic's own, else the broker default)."""
        ...

    async def next_producer_id(self) -> int:
        """A producer id never handed out before."""
        ...

    async def describe_quorum(self) -> QuorumInfo:
        """The metadata quorum as its leader sees it (DescribeQuorum); raises
        :class:`~chronik.metadata.view.QuorumUnavailable` when no leader can say."""
        ...
