"""DeleteTopics (key 20): by name (v0-v5) or by name or topic id (v6+).

The topic leaves the metadata image when its DeleteTopic command is durable;
its partition logs are then closed and their files removed (a crash in
between is finished at the next start, see :mod:`chronik.log.manager`).
"""

from __future__ import annotations

from typing import Any

from ..metadata import CommandRejected, DeleteTopic
from ..metadata.log import METADATA_TOPIC
from ..protocol import ErrorCode
from ..protocol.build import is_zero_uuid
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


def deletion_targets(request: Any) -> list[tuple[str | None, Any]]:
    if getattr(request, "topics", None):
        return [(t.name, t.topic_id) for t in request.topics]
    return [(name, None) for name in getattr(request, "topic_names", ())]


@handles(20, 1, 6)
async def handle_delete_topics(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    results = []
    for name, topic_id in deletion_targets(request):
        if name is None and not is_zero_uuid(topic_id):
            topic = broker.image.topics_by_id.get(topic_id)
            missing = ErrorCode.UNKNOWN_TOPIC_ID
        else:
            topic = broker.image.topics.get(name)
            missing = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        result = {"name": name, "topic_id": topic_id, "error_code": 0, "error_message": None}
        results.append(result)
        if not ctx.authorized(AclOperation.DELETE, ResourceType.TOPIC, topic.name if topic is not None else name):
            if name is None:  # as Kafka: an id the principal may not touch is not known to it
                result.update(error_code=int(ErrorCode.UNKNOWN_TOPIC_ID), error_message="topic does not exist")
            else:
                result.update(error_code=int(ErrorCode.TOPIC_AUTHORIZATION_FAILED), error_message=None)
            continue
        if topic is None:
            result.update(error_code=int(missing), error_message="topic does not exist")
            continue
        result.update(name=topic.name, topic_id=topic.topic_id)
        if topic.name == METADATA_TOPIC:
            result.update(error_code=int(ErrorCode.INVALID_TOPIC_EXCEPTION), error_message="internal topic")
            continue
        try:
            await broker.submit(DeleteTopic(name=topic.name, topic_id=topic.topic_id.hex), ctx.origin)
        except CommandRejected as exc:
            result.update(error_code=int(ErrorCode[exc.error]), error_message=exc.message)
    return ctx.respond(throttle_time=0, responses=results)
