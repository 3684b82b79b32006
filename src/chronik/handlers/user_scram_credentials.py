"""DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554).

Describe: every user with a credential (``users`` null or empty), or the named
ones -- a name given twice is DUPLICATE_RESOURCE, a user without credentials
RESOURCE_NOT_FOUND.  Only mechanisms and iteration counts are returned.

Alter: the client sends the SaltedPassword (never the password); the broker
derives and stores only salt, iterations, StoredKey and ServerKey
(:func:`~chronik.security.scram.credential_from_salted_password`), through the
metadata log (replicated in cluster mode).  As in Kafka, the alterations are
checked per user first: a user with an invalid one (unknown mechanism,
iterations out of range, empty name, an empty salt or SaltedPassword, two
alterations of the same mechanism, deleting a credential that does not exist)
gets that error and none of its alterations is applied.

Authorization, as Kafka: DESCRIBE on the cluster for Describe (else
CLUSTER_AUTHORIZATION_FAILED for the whole request), ALTER on the cluster for
Alter (else CLUSTER_AUTHORIZATION_FAILED for every user).
"""

from __future__ import annotations

from typing import Any

from ..metadata import CommandRejected
from ..metadata.commands import DeleteScramCredential, UpsertScramCredential
from ..metadata.acls import AclOperation, ResourceType
from ..metadata.credentials import SCRAM_MECHANISMS, SCRAM_MECHANISMS_BY_CODE
from ..protocol import ErrorCode
from ..security.scram import credential_from_salted_password
from .registry import RequestContext, handles


@handles(50, 0, 0)
async def handle_describe_user_scram_credentials(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                           error_message="Cluster authorization failed.", results=[])
    credentials = ctx.broker.image.security.credentials
    by_user: dict[str, list[dict[str, int]]] = {}
    for (user, mechanism_name), credential in sorted(credentials.items()):
        by_user.setdefault(user, []).append({"mechanism": SCRAM_MECHANISMS[mechanism_name].code,
                                             "iterations": credential.iterations})
    if not request.users:
        results = [{"user": user, "error_code": 0, "error_message": None, "credential_infos": infos}
                   for user, infos in by_user.items()]
        return ctx.respond(throttle_time=0, error_code=0, error_message=None, results=results)
    names = [u.name for u in request.users]
    results = []
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            results.append({"user": name, "error_code": int(ErrorCode.DUPLICATE_RESOURCE),
                            "error_message": f"Cannot describe SCRAM credentials for the same user twice: {name}",
                            "credential_infos": []})
        elif name not in by_user:
            results.append({"user": name, "error_code": int(ErrorCode.RESOURCE_NOT_FOUND),
                            "error_message": f"Attempt to describe a user credential that does not exist: {name}",
                            "credential_infos": []})
        else:
            results.append({"user": name, "error_code": 0, "error_message": None, "credential_infos": by_user[name]})
    return ctx.respond(throttle_time=0, error_code=0, error_message=None, results=results)


def _problem(ctx: RequestContext, alteration: Any, upsert: bool) -> tuple[ErrorCode, str] | None:
    mechanism = SCRAM_MECHANISMS_BY_CODE.get(alteration.mechanism)
    if not alteration.name:
        return ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"
    if mechanism is None:
        return ErrorCode.UNSUPPORTED_SASL_MECHANISM, f"Unknown SCRAM mechanism {alteration.mechanism}"
    if upsert:
        if not mechanism.min_iterations <= alteration.iterations <= mechanism.max_iterations:
            return ErrorCode.UNACCEPTABLE_CREDENTIAL, (f"Iterations must be between {mechanism.min_iterations} and "
                                                      f"{mechanism.max_iterations} for {mechanism.name}")
        if not alteration.salt or not alteration.salted_password:
            return ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salt and salted password must not be empty"
    elif ctx.broker.image.security.credential(alteration.name, mechanism.name) is None:
        return ErrorCode.RESOURCE_NOT_FOUND, (f"Attempt to delete a user credential that does not exist: "
                                              f"{alteration.name} {mechanism.name}")
    return None


@handles(51, 0, 0)
async def handle_alter_user_scram_credentials(ctx: RequestContext, request: Any) -> Any:
    alterations = [(d, False) for d in request.deletions] + [(u, True) for u in request.upsertions]
    if not ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER):
        users = dict.fromkeys(a.name for a, _ in alterations)
        return ctx.respond(throttle_time=0, results=[
            {"user": name, "error_code": int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED), "error_message": None}
            for name in users])
    errors: dict[str, tuple[ErrorCode, str]] = {}
    seen: set[tuple[str, int]] = set()
    for alteration, upsert in alterations:
        key = (alteration.name, alteration.mechanism)
        if key in seen and alteration.name not in errors:
            errors[alteration.name] = (ErrorCode.DUPLICATE_RESOURCE,
                                       "A user credential cannot be altered twice in the same request")
        seen.add(key)
        problem = _problem(ctx, alteration, upsert)
        if problem is not None and alteration.name not in errors:
            errors[alteration.name] = problem
    results: dict[str, dict[str, Any]] = {}
    for alteration, upsert in alterations:
        name = alteration.name
        result = results.setdefault(name, {"user": name, "error_code": 0, "error_message": None})
        if name in errors:
            code, message = errors[name]
            result.update(error_code=int(code), error_message=message)
            continue
        if result["error_code"]:
            continue
        mechanism = SCRAM_MECHANISMS_BY_CODE[alteration.mechanism]
        if upsert:
            credential = credential_from_salted_password(mechanism, bytes(alteration.salted_password),
                                                         bytes(alteration.salt), alteration.iterations)
            command: Any = UpsertScramCredential(user=name, mechanism=mechanism.name, credential=credential.to_json())
        else:
            command = DeleteScramCredential(user=name, mechanism=mechanism.name)
        try:
            await ctx.broker.submit(command, ctx.origin)
        except CommandRejected as exc:
            result.update(error_code=int(ErrorCode[exc.error]), error_message=exc.message)
    return ctx.respond(throttle_time=0, results=list(results.values()))
