"""Broker memory under many idle client connections, and after they close (issue 18).

Run:  python bench/connections.py [--connections 5000] [--slowloris 0] [--reset]
                                  [--broker-arg=--set=... ...] [--json PATH]

Starts ``python -m chronik serve`` (fresh data directory, port 0, with
``max.connections`` and ``max.connections.per.ip`` raised above the count),
reads its VmRSS once warmed up (a few hundred connections opened and closed
first, so allocator pools exist), then opens ``--connections`` connections,
each sending one ApiVersions request and then nothing, and reads VmRSS again
with all of them open and idle.  ``--slowloris N`` adds N connections that
send a request's first bytes and stop.  Then every connection closes (with a
FIN, or a TCP reset with ``--reset``) and VmRSS is read once more after the
broker settled -- with no ``gc.collect()`` anywhere: what a closed connection
leaves must be freed by reference counting alone.

Prints: baseline, open, after-close (MiB), bytes per open connection, and
after-close relative to the baseline, per round (``--rounds``, default 2:
the second shows whether the memory the first left behind is reused or
leaked).  Targets: <= 8 KiB per idle connection; after close within +-10 %
of the baseline.  Exit status 1 when a target is missed.

CPython's allocator keeps a 1 MiB arena while any block in it is in use, so
a wave of connections leaves arenas mapped (about the wave's size) even when
every one of its objects is freed; a second wave reuses them, so RSS after
the second round stays where the first left it.  Raises the soft ``RLIMIT_NOFILE`` of this process (the
broker inherits it) to fit the connections; as root it raises the hard limit
too.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.integration.brokerproc import BrokerProcess  # noqa: E402
from tests.integration.raw import request_frame  # noqa: E402

KIB = 1024
MIB = 1024 * 1024
TARGET_PER_CONNECTION = 8 * KIB
TARGET_AFTER_CLOSE = 0.10


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError):
            sys.exit(f"need {needed} file descriptors, the hard limit is {hard}: raise it (ulimit -Hn) or run as root")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def settle(broker: BrokerProcess, seconds: float = 3.0) -> int:
    """VmRSS once it stopped moving (or after ``seconds``)."""
    previous = broker.rss_bytes()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = broker.rss_bytes()
        if abs(now - previous) < 64 * KIB:
            return now
        previous = now
    return broker.rss_bytes()


def open_connections(port: int, count: int, first_bytes: bytes, answer: bool) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(first_bytes)
        socks.append(sock)
    if answer:
        for sock in socks:  # every request answered: the broker has served each connection once
            sock.settimeout(10)
            size = struct.unpack(">i", recv_exactly(sock, 4))[0]
            recv_exactly(sock, size)
    return socks


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


def close_all(socks: list[socket.socket], reset: bool) -> None:
    for sock in socks:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--slowloris", type=int, default=0, help="connections that send a partial request and stop")
    parser.add_argument("--reset", action="store_true", help="close with a TCP reset instead of a FIN")
    parser.add_argument("--rounds", type=int, default=2, help="open and close the connections this many times")
    parser.add_argument("--broker-arg", action="append", default=[], help="extra argument for chronik serve")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    total = args.connections + args.slowloris
    raise_fd_limit(2 * total + 256)  # client and broker ends, when both run under this limit
    request = request_frame(18, 3, {"client_software_name": "bench", "client_software_version": "1"})
    limit = str(total + 100)
    with tempfile.TemporaryDirectory(prefix="chronik-conn-bench-") as data:
        broker = BrokerProcess(Path(data) / "data", "--set", f"max.connections={limit}",
                               "--set", f"max.connections.per.ip={limit}", *args.broker_arg).start()
        try:
            for _ in range(3):  # warm up: allocator pools, code paths
                close_all(open_connections(broker.port, 300, request, True), args.reset)
            time.sleep(1)
            baseline = settle(broker)
            rows = []
            for _ in range(args.rounds):
                socks = open_connections(broker.port, args.connections, request, True)
                socks += open_connections(broker.port, args.slowloris, request[: len(request) // 2], False)
                opened = settle(broker, 5.0)
                close_all(socks, args.reset)
                del socks
                time.sleep(1)
                closed = settle(broker, 8.0)
                rows.append((opened, closed))
            alive = broker.proc is not None and broker.proc.poll() is None
        finally:
            broker.stop()
    print(f"{'round':>5} {'connections':>12} {'baseline MiB':>13} {'open MiB':>9} {'closed MiB':>11} "
          f"{'B/conn':>8} {'closed/base':>12}")
    result: dict[str, object] = {"connections": args.connections, "slowloris": args.slowloris,
                                 "close": "reset" if args.reset else "fin", "baseline_mib": round(baseline / MIB, 1),
                                 "rounds": [], "broker_alive": alive}
    for n, (opened, closed) in enumerate(rows, 1):
        per_connection = (opened - baseline) / max(total, 1)
        after = (closed - baseline) / baseline
        print(f"{n:>5} {total:>12} {baseline / MIB:>13.1f} {opened / MIB:>9.1f} {closed / MIB:>11.1f} "
              f"{per_connection:>8.0f} {after:>+12.1%}")
        result["rounds"].append({"open_mib": round(opened / MIB, 1), "closed_mib": round(closed / MIB, 1),  # type: ignore[attr-defined]
                                 "bytes_per_connection": round(per_connection), "after_close_vs_baseline": round(after, 3)})
    per_connection = (rows[0][0] - baseline) / max(total, 1)
    after = (rows[-1][1] - baseline) / baseline
    met = alive and per_connection <= TARGET_PER_CONNECTION and abs(after) <= TARGET_AFTER_CLOSE
    print(f"targets: <= {TARGET_PER_CONNECTION} B per connection, after close within "
          f"+-{TARGET_AFTER_CLOSE:.0%} of the baseline: {'met' if met else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
