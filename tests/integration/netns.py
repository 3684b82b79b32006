"""A private test network of Linux network namespaces, for cutting a node off the way a network does.

Layout (names carry this process's pid, so parallel runs never meet)::

    ck<pid>h   the hub: bridge br0 (10.213.0.254/24), where the test's clients live
    ck<pid>n1  a node: v1 = 10.213.0.1/24, its veth peer h1 a port of br0 in the hub
    ck<pid>n2  ...

Every address exists only inside these namespaces: nothing is added to the
host's own network.  :meth:`TestNet.cut` detaches a node's port from the
bridge, so every packet to or from it is silently dropped -- as an iptables
DROP rule or a pulled cable does, with no RST or ICMP to tell TCP -- and
:meth:`TestNet.heal` attaches it again.  The test's client sockets are made
inside the hub (:meth:`TestNet.dial`) by a short-lived thread that enters
it with ``setns(2)``.  :meth:`TestNet.drop_inbound` drops only the packets to a
node (a ``pfifo`` queue of length 0 on its bridge port, via ``tc``), so it
can send but not hear.

Needs root, ``ip`` and ``tc`` (iproute2); :func:`unavailable` says why not, for a skip.
Everything is removed by :meth:`TestNet.close` (deleting a namespace deletes
its interfaces), which :func:`open_testnet` always calls.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SUBNET = "10.213.0"
CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def unavailable() -> str | None:
    """Why network namespaces cannot be used here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "no ip or tc command (iproute2)"
    probe = f"ck{os.getpid()}p"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {getattr(exc, 'stderr', '') or exc}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
    except subprocess.CalledProcessError as exc:
        return f"cannot create a bridge: {exc.stderr.strip()}"
    finally:
        _ip("netns", "del", probe)
    return None


class TestNet:
    """The namespaces of one test (see the module docstring)."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, nodes: tuple[int, ...]) -> None:
        tag = f"ck{os.getpid()}"
        self.hub = f"{tag}h"
        self.namespaces = {i: f"{tag}n{i}" for i in nodes}
        self._created: list[str] = []
        self._libc = ctypes.CDLL(None, use_errno=True)

    def address(self, node: int) -> str:
        return f"{SUBNET}.{node}"

    def create(self) -> None:
        _ip("netns", "add", self.hub)
        self._created.append(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{SUBNET}.254/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        _ip("-n", self.hub, "link", "set", "lo", "up")
        for node, ns in self.namespaces.items():
            _ip("netns", "add", ns)
            self._created.append(ns)
            _ip("link", "add", f"v{node}", "netns", ns, "type", "veth", "peer", "name", f"h{node}", "netns", self.hub)
            _ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", f"v{node}")
            _ip("-n", ns, "link", "set", f"v{node}", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.hub, "link", "set", f"h{node}", "master", "br0", "up")

    def cut(self, node: int) -> None:
        """Drop every packet to and from ``node`` (silently: TCP is not told)."""
        _ip("-n", self.hub, "link", "set", f"h{node}", "nomaster")

    def heal(self, node: int) -> None:
        _ip("-n", self.hub, "link", "set", f"h{node}", "master", "br0")

    def drop_inbound(self, node: int, dropping: bool = True) -> None:
        """Drop every packet *to* ``node`` (a queue of length 0 on its port), or stop."""
        qdisc = ["tc", "qdisc", "add" if dropping else "del", "dev", f"h{node}", "root"]
        subprocess.run(["ip", "netns", "exec", self.hub, *qdisc, *(["pfifo", "limit", "0"] if dropping else [])],
                       check=True, capture_output=True, text=True, timeout=10)

    def close(self) -> None:
        for ns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self._created.clear()

    def dial(self, address: tuple[str, int], timeout: float) -> socket.socket:
        """A TCP connection to ``address`` made from the hub namespace (the socket stays
        there, usable from any thread)."""
        outcome: list[socket.socket | BaseException] = []

        def enter_and_connect() -> None:
            try:
                with open(f"/var/run/netns/{self.hub}") as handle:
                    if self._libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                        errno = ctypes.get_errno()
                        raise OSError(errno, f"setns({self.hub}): {os.strerror(errno)}")
                outcome.append(socket.create_connection(address, timeout=timeout))
            except BaseException as exc:  # handed to the caller's thread
                outcome.append(exc)

        thread = threading.Thread(target=enter_and_connect, name=f"dial-{self.hub}")  # dies with its namespace
        thread.start()
        thread.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]


@contextmanager
def open_testnet(nodes: tuple[int, ...]) -> Iterator[TestNet]:
    """A :class:`TestNet` for ``nodes``, removed however the block ends."""
    net = TestNet(nodes)
    try:
        net.create()
        yield net
    finally:
        net.close()
