"""ApiVersions (key 18): the versions served, derived from the handler registry.

v4 differs from v3 only in what a broker may say about feature flags (a
supported feature's min_version may be 0); Chronik lists no features, so one
body serves v0-v4.  A client newer than that (Java 4.x sends v5) gets the v0
answer with UNSUPPORTED_VERSION and this list, and retries with v4: the
negotiation Kafka defines, not an error (see ``chronik.server.kafka``).
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from .registry import RequestContext, handles, served_versions


def api_versions_body(error: ErrorCode = ErrorCode.NONE) -> dict[str, Any]:
    return {
        "error_code": int(error),
        "api_keys": [
            {"api_key": r.api_key, "min_version": r.min_version, "max_version": r.max_version}
            for r in served_versions()
        ],
        "throttle_time": 0,
    }


@handles(18, 0, 4)
async def handle_api_versions(ctx: RequestContext, request: Any) -> Any:
    return ctx.respond(api_versions_body())
