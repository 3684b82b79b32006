"""Cluster mode: controller election and the replicated metadata log.

:mod:`chronik.cluster.raft` is the sans-I/O consensus core; the trio tasks
that drive it (replication listener, forwarding) are built on top of it.
"""
