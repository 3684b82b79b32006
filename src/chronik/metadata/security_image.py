"""The security part of the metadata image: SCRAM credentials and ACL bindings.

Applied like the rest of :class:`~chronik.metadata.image.MetadataImage`
(deterministic, no I/O).  Invariants: ``credentials`` maps (user, mechanism
name) to a credential of a known mechanism; ``acls`` is a tuple of distinct,
valid bindings (:func:`~chronik.metadata.acls.binding_problem`), in the order
they were created, and is *replaced* (never mutated) on every change, so a
reader (the authorizer) can tell a change by identity.
"""

from __future__ import annotations

from typing import Any

from .acls import AclBinding, AclBindingFilter, binding_problem
from .commands import CreateAcls, DeleteAcls, DeleteScramCredential, UpsertScramCredential
from .credentials import SCRAM_MECHANISMS, ScramCredential


class SecurityImage:
    def __init__(self) -> None:
        self.credentials: dict[tuple[str, str], ScramCredential] = {}
        self.acls: tuple[AclBinding, ...] = ()

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        return self.credentials.get((user, mechanism))

    def upsert_credential(self, c: UpsertScramCredential, reject: Any) -> None:
        mechanism = SCRAM_MECHANISMS.get(c.mechanism)
        if mechanism is None:
            raise reject("UNSUPPORTED_SASL_MECHANISM", f"unknown SCRAM mechanism {c.mechanism!r}")
        if not c.user:
            raise reject("UNACCEPTABLE_CREDENTIAL", "the user name must not be empty")
        credential = ScramCredential.from_json(c.credential)
        if not mechanism.min_iterations <= credential.iterations <= mechanism.max_iterations:
            raise reject("UNACCEPTABLE_CREDENTIAL", f"{c.mechanism} iterations must be between "
                         f"{mechanism.min_iterations} and {mechanism.max_iterations}")
        self.credentials[(c.user, c.mechanism)] = credential

    def delete_credential(self, c: DeleteScramCredential, reject: Any) -> None:
        if self.credentials.pop((c.user, c.mechanism), None) is None:
            raise reject("RESOURCE_NOT_FOUND", f"user {c.user!r} has no {c.mechanism} credential")

    def create_acls(self, c: CreateAcls) -> list[list[str] | None]:
        results: list[list[str] | None] = []
        present = set(self.acls)
        added = []
        for fields in c.acls:
            binding = AclBinding.from_list(fields)
            problem = binding_problem(binding)
            if problem is not None:
                results.append(["INVALID_REQUEST", problem])
                continue
            if binding not in present:
                present.add(binding)
                added.append(binding)
            results.append(None)
        if added:
            self.acls = self.acls + tuple(added)
        return results

    def delete_acls(self, c: DeleteAcls) -> list[list[list[Any]]]:
        filters = [AclBindingFilter.from_list(fields) for fields in c.filters]
        deleted = [[b.to_list() for b in self.acls if f.matches(b)] for f in filters]
        if any(deleted):
            self.acls = tuple(b for b in self.acls if not any(f.matches(b) for f in filters))
        return deleted

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "scram_credentials": [[user, mechanism, credential.to_json()]
                                  for (user, mechanism), credential in self.credentials.items()],
            "acls": [b.to_list() for b in self.acls],
        }

    def load_snapshot(self, data: dict[str, Any]) -> None:
        self.credentials = {(user, mechanism): ScramCredential.from_json(credential)
                            for user, mechanism, credential in data.get("scram_credentials", [])}
        self.acls = tuple(AclBinding.from_list(fields) for fields in data.get("acls", []))
