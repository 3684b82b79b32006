"""Broker memory under many idle client connections, and after they close (issue 18).

Run:  python bench/connections.py [--connections 5000] [--slowloris 0] [--reset]
                                  [--rounds 2] [--allocator default|malloc]
                                  [--broker-arg=--set=... ...] [--json PATH]

What it measures: the resident size (VmRSS) of one ``python -m chronik serve``
process (fresh data directory, port 0, ``max.connections`` and
``max.connections.per.ip`` raised above the count), at these points:

* start-up: just after it listens (printed for reference only);
* baseline: after it has served clients -- three waves of 300 connections,
  each answered one ApiVersions and then closed -- and settled;
* open: with ``--connections`` connections open and idle, each answered one
  ApiVersions (``--slowloris N`` adds N that sent half a request and stopped);
* closed: after every connection closed (FIN, or a TCP reset with
  ``--reset``), the broker noticed and settled.

Nothing here calls ``gc.collect()``: what a closed connection leaves must be
freed by reference counting (no reference cycles), and what the broker
gives back to the operating system it gives back on its own.  It does so
after many connections closed (``chronik.server.memory``): it clears
CPython's free lists and calls glibc's ``malloc_trim``, and logs one line;
the script waits up to 10 s for that line after each close, and prints it
(how much, how long it took).

Prints per round (``--rounds``, default 2: the second shows whether what the
first left is reused or grows): baseline, open and after-close RSS in MiB,
bytes per open connection, after-close relative to the baseline.  Targets:
<= 8 KiB per idle connection; after close within +-10 % of the baseline.
Exit status 1 when a target is missed.

``--allocator malloc`` runs the broker with ``PYTHONMALLOC=malloc``.  With
CPython's own allocator (``default``) a 1 MiB arena stays mapped while any
block in it is in use, and a few dozen blocks of long-lived tasks, timers
and metrics, allocated while the connections were open or after, keep about
half of their arenas; with glibc's allocator ``malloc_trim`` returns memory
page by page (bench/README.md and
docs/operations.md, "Memory", have both sets of figures and the cost).
Raises the soft ``RLIMIT_NOFILE`` of this process (the broker inherits it)
to fit the connections; as root it raises the hard limit too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
WARM_UP_WAVES, WARM_UP_CONNECTIONS = 3, 300
#: The broker's line when it handed freed memory back (chronik.server.memory).
RELEASED = re.compile(r"\d+ of \d+ connections closed: returned freed memory to the OS.*")
RELEASE_WAIT = 10.0


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


def wait_for_release(broker: BrokerProcess, seen: int) -> str | None:
    """The broker's first memory-release line after the first ``seen`` log lines, waiting up to RELEASE_WAIT s."""
    deadline = time.monotonic() + RELEASE_WAIT
    while time.monotonic() < deadline:
        for line in broker.log_lines[seen:]:
            match = RELEASED.search(line)
            if match:
                return match.group(0)
        time.sleep(0.2)
    return None


def start_broker(data: Path, limit: int, allocator: str, extra: list[str]) -> BrokerProcess:
    """The broker, with PYTHONMALLOC=malloc for ``allocator == "malloc"`` (this process's own allocator is unaffected)."""
    saved = os.environ.pop("PYTHONMALLOC", None)
    if allocator == "malloc":
        os.environ["PYTHONMALLOC"] = "malloc"
    try:
        return BrokerProcess(data, "--set", f"max.connections={limit}", "--set", f"max.connections.per.ip={limit}",
                             *extra).start()
    finally:
        os.environ.pop("PYTHONMALLOC", None)
        if saved is not None:
            os.environ["PYTHONMALLOC"] = saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--slowloris", type=int, default=0, help="connections that send a partial request and stop")
    parser.add_argument("--reset", action="store_true", help="close with a TCP reset instead of a FIN")
    parser.add_argument("--rounds", type=int, default=2, help="open and close the connections this many times")
    parser.add_argument("--allocator", choices=("default", "malloc"), default="default",
                        help="the broker's allocator: CPython's default (pymalloc), or PYTHONMALLOC=malloc")
    parser.add_argument("--broker-arg", action="append", default=[], help="extra argument for chronik serve")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    total = args.connections + args.slowloris
    raise_fd_limit(2 * total + 256)  # client and broker ends, when both run under this limit
    request = request_frame(18, 3, {"client_software_name": "bench", "client_software_version": "1"})
    with tempfile.TemporaryDirectory(prefix="chronik-conn-bench-") as data:
        broker = start_broker(Path(data) / "data", total + 100, args.allocator, args.broker_arg)
        try:
            startup = settle(broker)
            for _ in range(WARM_UP_WAVES):  # the baseline is a broker that has served clients
                close_all(open_connections(broker.port, WARM_UP_CONNECTIONS, request, True), args.reset)
            time.sleep(1)
            baseline = settle(broker)
            rows = []
            for _ in range(args.rounds):
                socks = open_connections(broker.port, args.connections, request, True)
                socks += open_connections(broker.port, args.slowloris, request[: len(request) // 2], False)
                opened = settle(broker, 5.0)
                seen = len(broker.log_lines)
                close_all(socks, args.reset)
                del socks
                released = wait_for_release(broker, seen)
                time.sleep(1)
                closed = settle(broker, 8.0)
                rows.append((opened, closed, released))
            alive = broker.proc is not None and broker.proc.poll() is None
        finally:
            broker.stop()
    allocator = "PYTHONMALLOC=malloc" if args.allocator == "malloc" else "CPython's default (pymalloc)"
    print(f"broker VmRSS, allocator {allocator}; start-up {startup / MIB:.1f} MiB; baseline after serving "
          f"{WARM_UP_WAVES} x {WARM_UP_CONNECTIONS} connections (one ApiVersions each, then closed); "
          f"{total} connections per round ({args.slowloris} slowloris), closed with "
          f"{'a reset' if args.reset else 'a FIN'}; no gc.collect() by this script")
    print(f"{'round':>5} {'connections':>12} {'baseline MiB':>13} {'open MiB':>9} {'closed MiB':>11} "
          f"{'B/conn':>8} {'closed/base':>12}")
    rounds: list[dict[str, object]] = []
    result: dict[str, object] = {"connections": args.connections, "slowloris": args.slowloris,
                                 "close": "reset" if args.reset else "fin", "allocator": args.allocator,
                                 "startup_mib": round(startup / MIB, 1), "baseline_mib": round(baseline / MIB, 1),
                                 "rounds": rounds, "broker_alive": alive}
    for n, (opened, closed, released) in enumerate(rows, 1):
        per_connection = (opened - baseline) / max(total, 1)
        after = (closed - baseline) / baseline
        print(f"{n:>5} {total:>12} {baseline / MIB:>13.1f} {opened / MIB:>9.1f} {closed / MIB:>11.1f} "
              f"{per_connection:>8.0f} {after:>+12.1%}")
        print(f"      broker: {released or f'no memory release logged within {RELEASE_WAIT:g} s of the close'}")
        rounds.append({"open_mib": round(opened / MIB, 1), "closed_mib": round(closed / MIB, 1),
                       "bytes_per_connection": round(per_connection), "after_close_vs_baseline": round(after, 3),
                       "broker_release": released})
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
