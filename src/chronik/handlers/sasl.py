"""SaslHandshake and SaslAuthenticate outside a SASL exchange.

On a SASL listener the server runs the exchange itself before any handler
sees a request (:mod:`chronik.server.security`); these handlers only answer
what reaches them: a handshake or token on a listener without SASL, or a
second one after authentication -- ILLEGAL_SASL_STATE, as Kafka answers.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from .registry import RequestContext, handles


@handles(17, 0, 1)
async def handle_sasl_handshake(ctx: RequestContext, request: Any) -> Any:
    return ctx.respond(error_code=int(ErrorCode.ILLEGAL_SASL_STATE), mechanisms=[])


@handles(36, 0, 2)
async def handle_sasl_authenticate(ctx: RequestContext, request: Any) -> Any:
    return ctx.respond(error_code=int(ErrorCode.ILLEGAL_SASL_STATE),
                       error_message="SaslAuthenticate outside a SASL exchange (not a SASL listener, or already "
                                     "authenticated)", auth_bytes=b"", session_lifetime=0)
