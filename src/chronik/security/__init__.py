"""Security: SASL authentication (PLAIN, SCRAM), TLS principals and ACL authorization.

Pure computation, no sockets: the server layer feeds these the bytes and
names it sees.  The stored state (credentials, ACL bindings) lives in the
metadata image (:mod:`chronik.metadata.security_image`).
"""
