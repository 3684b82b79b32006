"""Chronik: a Kafka-compatible streaming broker on trio."""

__version__ = "0.1.0"
