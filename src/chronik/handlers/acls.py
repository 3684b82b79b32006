"""DescribeAcls (key 29), CreateAcls (key 30), DeleteAcls (key 31), versions 1-3 (the codec has no v0, which Kafka 4 dropped too).

Kafka's semantics:

* Without an authorizer (``authorizer.class.name`` unset) every answer is
  SECURITY_DISABLED ("No Authorizer is configured").
* DescribeAcls needs DESCRIBE on the cluster, CreateAcls and DeleteAcls ALTER
  on the cluster; otherwise CLUSTER_AUTHORIZATION_FAILED (for every creation
  or filter).
* A creation that is not a concrete binding
  (:func:`~chronik.metadata.acls.binding_problem`), or a filter with an
  UNKNOWN or unheard-of code, gets INVALID_REQUEST; the others go on.
* Creations and deletions go through the metadata log (:class:`CreateAcls` /
  :class:`DeleteAcls` commands), so they are durable and, in cluster mode,
  reach every node; creating a binding already stored is a no-op.

DescribeAcls groups the matching bindings by resource pattern, in the order
they were created.
"""

from __future__ import annotations

from typing import Any

from ..metadata import CommandRejected
from ..metadata.acls import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType, \
    binding_problem
from ..metadata.commands import CreateAcls, DeleteAcls
from ..protocol import ErrorCode
from .registry import RequestContext, handles

NO_AUTHORIZER = "No Authorizer is configured."


def _refusal(ctx: RequestContext, operation: AclOperation) -> tuple[ErrorCode, str] | None:
    """Why the whole request is refused (no authorizer, or not allowed on the cluster), or None."""
    if ctx.broker.authorizer is None:
        return ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER
    if not ctx.authorized(operation, ResourceType.CLUSTER):
        return ErrorCode.CLUSTER_AUTHORIZATION_FAILED, f"{ctx.principal} may not {operation.name} the cluster"
    return None


def _code_problem(value: int, enum: Any, what: str) -> str | None:
    try:
        member = enum(value)
    except ValueError:
        return f"unknown {what} code {value}"
    if member.name == "UNKNOWN":
        return f"{what} must not be UNKNOWN"
    return None


def filter_problem(f: AclBindingFilter) -> str | None:
    """Why ``f`` is not a valid DescribeAcls / DeleteAcls filter (INVALID_REQUEST), or None."""
    return (_code_problem(f.resource_type, ResourceType, "resource type")
            or _code_problem(f.pattern_type, PatternType, "pattern type")
            or _code_problem(f.operation, AclOperation, "operation")
            or _code_problem(f.permission, AclPermissionType, "permission type"))


def _filter_of(request: Any) -> AclBindingFilter:
    return AclBindingFilter(request.resource_type_filter, request.resource_name_filter, request.pattern_type_filter,
                            request.principal_filter, request.host_filter, request.operation, request.permission_type)


@handles(29, 1, 3)
async def handle_describe_acls(ctx: RequestContext, request: Any) -> Any:
    refused = _refusal(ctx, AclOperation.DESCRIBE)
    acl_filter = _filter_of(request)
    if refused is None:
        problem = filter_problem(acl_filter)
        if problem is not None:
            refused = ErrorCode.INVALID_REQUEST, problem
    if refused is not None:
        return ctx.respond(throttle_time=0, error_code=int(refused[0]), error_message=refused[1], resources=[])
    by_pattern: dict[tuple[int, str, int], list[dict[str, Any]]] = {}
    for b in ctx.broker.image.security.acls:
        if acl_filter.matches(b):
            by_pattern.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
                {"principal": b.principal, "host": b.host, "operation": b.operation, "permission_type": b.permission})
    resources = [{"resource_type": t, "resource_name": name, "pattern_type": p, "acls": acls}
                 for (t, name, p), acls in by_pattern.items()]
    return ctx.respond(throttle_time=0, error_code=0, error_message=None, resources=resources)


@handles(30, 1, 3)
async def handle_create_acls(ctx: RequestContext, request: Any) -> Any:
    refused = _refusal(ctx, AclOperation.ALTER)
    if refused is not None:
        return ctx.respond(throttle_time=0, results=[{"error_code": int(refused[0]), "error_message": refused[1]}
                                                     for _ in request.creations])
    results: list[dict[str, Any] | None] = []
    valid: list[AclBinding] = []
    for c in request.creations:
        binding = AclBinding(c.resource_type, c.resource_name, c.resource_pattern_type, c.principal, c.host,
                             c.operation, c.permission_type)
        problem = binding_problem(binding)
        if problem is not None:
            results.append({"error_code": int(ErrorCode.INVALID_REQUEST), "error_message": problem})
        else:
            results.append(None)
            valid.append(binding)
    outcomes: list[Any] = []
    if valid:
        try:
            outcomes = list(await ctx.broker.submit(CreateAcls(acls=[b.to_list() for b in valid]), ctx.origin))  # type: ignore[arg-type]
        except CommandRejected as exc:
            outcomes = [[exc.error, exc.message]] * len(valid)
    answers = iter(outcomes)
    out = []
    for result in results:
        if result is None:
            outcome = next(answers)
            result = ({"error_code": 0, "error_message": None} if outcome is None
                      else {"error_code": int(ErrorCode[outcome[0]]), "error_message": outcome[1]})
        out.append(result)
    return ctx.respond(throttle_time=0, results=out)


def _matching_acl(fields: list[Any]) -> dict[str, Any]:
    b = AclBinding.from_list(fields)
    return {"error_code": 0, "error_message": None, "resource_type": b.resource_type,
            "resource_name": b.resource_name, "pattern_type": b.pattern_type, "principal": b.principal,
            "host": b.host, "operation": b.operation, "permission_type": b.permission}


@handles(31, 1, 3)
async def handle_delete_acls(ctx: RequestContext, request: Any) -> Any:
    refused = _refusal(ctx, AclOperation.ALTER)
    if refused is not None:
        return ctx.respond(throttle_time=0, filter_results=[
            {"error_code": int(refused[0]), "error_message": refused[1], "matching_acls": []} for _ in request.filters])
    filters = [_filter_of(f) for f in request.filters]
    problems = [filter_problem(f) for f in filters]
    valid = [f for f, problem in zip(filters, problems) if problem is None]
    deleted: list[Any] = []
    rejected: tuple[str, str] | None = None
    if valid:
        try:
            deleted = list(await ctx.broker.submit(DeleteAcls(filters=[f.to_list() for f in valid]), ctx.origin))  # type: ignore[arg-type]
        except CommandRejected as exc:
            rejected = exc.error, exc.message
    answers = iter(deleted)
    out = []
    for problem in problems:
        if problem is not None:
            out.append({"error_code": int(ErrorCode.INVALID_REQUEST), "error_message": problem, "matching_acls": []})
        elif rejected is not None:
            out.append({"error_code": int(ErrorCode[rejected[0]]), "error_message": rejected[1], "matching_acls": []})
        else:
            out.append({"error_code": 0, "error_message": None,
                        "matching_acls": [_matching_acl(fields) for fields in next(answers)]})
    return ctx.respond(throttle_time=0, filter_results=out)
