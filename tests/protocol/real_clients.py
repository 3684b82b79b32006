"""Encoders and decoders of real Kafka clients, used as independent references.

kafka-python 3 builds its protocol classes from Kafka's JSON message specs (its
own generator, not kio's), and both kafka-python and aiokafka ship record batch
builders.  kafka-python reads its JSON with a deprecated ``importlib`` call at
import time; the project turns warnings into errors, so the imports live here,
under a filter.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from aiokafka.record.default_records import DefaultRecordBatch as AiokafkaBatch
    from aiokafka.record.default_records import DefaultRecordBatchBuilder as AiokafkaBatchBuilder
    from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse
    from kafka.protocol.producer import ProduceRequest, ProduceResponse
    from kafka.record.default_records import DefaultRecordBatch as KafkaPythonBatch
    from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaPythonBatchBuilder

__all__ = [
    "AiokafkaBatch",
    "AiokafkaBatchBuilder",
    "ApiVersionsRequest",
    "ApiVersionsResponse",
    "KafkaPythonBatch",
    "KafkaPythonBatchBuilder",
    "MetadataRequest",
    "MetadataResponse",
    "ProduceRequest",
    "ProduceResponse",
]
