"""What the parts above the metadata layer are given of it: the current image, and a way to change it.

Cluster services (replication, liveness, leader balancing), the group
coordinator and the request handlers read the image and submit commands;
they receive these two things, not the object that assembles the broker.
Both the single-node :class:`~chronik.metadata.log.MetadataLog` and the
cluster's :class:`~chronik.cluster.metadata.ReplicatedMetadataLog` are a
:class:`MetadataView`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias

from .commands import Command
from .image import MetadataImage


class MetadataView(Protocol):
    """Read access to the metadata: the image as applied so far (replaced or changed in place as commands apply)."""

    @property
    def image(self) -> MetadataImage: ...


Submit: TypeAlias = Callable[[Command], Awaitable[object]]
"""Append a metadata command durably and apply it; returns the command's result.

Raises :class:`~chronik.metadata.image.CommandRejected` with a Kafka error
name.  Cancellation: the command may still be applied."""
