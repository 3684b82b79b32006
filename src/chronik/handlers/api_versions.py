"""ApiVersions (key 18): the versions served, derived from the handler registry."""

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


@handles(18, 0, 3)
async def handle_api_versions(ctx: RequestContext, request: Any) -> Any:
    return ctx.respond(api_versions_body())
