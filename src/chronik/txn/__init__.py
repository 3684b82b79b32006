"""Transactions: the coordinator's sans-I/O state machine (state.py), its trio driver
(coordinator.py) and the marker writer for partitions this node leads (markers.py)."""

from .coordinator import MarkerWriter, StandaloneRole, TransactionCoordinator, TxnSettings

__all__ = ["MarkerWriter", "StandaloneRole", "TransactionCoordinator", "TxnSettings"]
