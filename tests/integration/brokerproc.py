"""A Chronik broker in a child process, as users run it: ``python -m chronik serve``.

Tests that use real Kafka clients talk to it over real sockets.  The broker
binds port 0 on 127.0.0.1 (no port races); the bound port is read from its
"listening for Kafka clients" log line and kept across :meth:`restart`.
A broker may also run inside a network namespace (``netns``, see
:mod:`.netns`), listening on ``host``; :meth:`connect` then dials it from
the namespace the test put its clients in.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

_LISTENING = re.compile(r"listening for Kafka clients on [^:]+:(\d+)")


class BrokerProcess:
    def __init__(self, data_dir: Path, *extra_args: str, port: int = 0, config: Path | None = None,
                 host: str = "127.0.0.1", netns: str | None = None,
                 dial: Callable[[tuple[str, int], float], socket.socket] | None = None,
                 own_listeners: bool = False) -> None:
        """``config``: start with ``--config FILE`` alone (plus ``extra_args``); the file must
        name ``data_dir`` and the Kafka listener ``127.0.0.1:port``.  ``netns``: run the
        broker in that network namespace (``ip netns exec``), listening on ``host``;
        ``dial((host, port), timeout)`` opens the test's client sockets (default: from here).
        ``own_listeners``: ``extra_args`` name the listeners (``--set listeners=...``): no
        ``--listen``/``--advertise``; ``port`` becomes the first listener's."""
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.port = port
        self.config = config
        self.host = host
        self.netns = netns
        self._dial = dial
        self.own_listeners = own_listeners
        self.proc: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self.log_mark = 0
        """:meth:`wait_for_log` looks at the lines from this index on (a shared broker's test: its own)."""
        self._reader: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, timeout: float) -> socket.socket:
        """A client socket connected to the Kafka listener."""
        if self._dial is not None:
            return self._dial((self.host, self.port), timeout)
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def start(self, timeout: float = 20.0) -> "BrokerProcess":
        address = self.bootstrap
        if self.config is not None:
            cmd = [sys.executable, "-m", "chronik", "serve", "--config", str(self.config), *self.extra_args]
        elif self.own_listeners:
            cmd = [sys.executable, "-m", "chronik", "serve", "--data-dir", str(self.data_dir), *self.extra_args]
        else:
            cmd = [sys.executable, "-m", "chronik", "serve", "--data-dir", str(self.data_dir),
                   "--listen", address, "--advertise", address, *self.extra_args]
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        env = dict(broker_environment(), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log_lines.append(line.rstrip("\n"))
                match = _LISTENING.search(line)
                if match and not ready.is_set():  # the first listener's
                    self.port = int(match.group(1))
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError("broker did not start:\n" + "\n".join(self.log_lines))
        return self

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: a clean shutdown.  Returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout)
        self._finish_reader()
        return status

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._finish_reader()

    def _finish_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def restart(self, *, crash: bool = False) -> "BrokerProcess":
        if crash:
            self.kill()
        else:
            self.stop()
        return self.start()

    def rss_bytes(self) -> int:
        """The broker process's resident memory now (VmRSS)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/PID/status")

    def output(self) -> str:
        return "\n".join(self.log_lines)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.log_lines[self.log_mark:]:
                if regex.search(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r} in:\n" + "\n".join(self.log_lines[self.log_mark:]))


def broker_environment() -> dict[str, str]:
    """This process's environment without the test suite's own switches (``CHRONIK_REQUIRE_*``,
    ``.ci/run`` sets them), which a broker would warn about as unknown settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CHRONIK_REQUIRE_")}


def serve(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m chronik serve ARGS`` to its end (it is expected to refuse to start)."""
    return subprocess.run([sys.executable, "-m", "chronik", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, env={**broker_environment(), **(env or {})})


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``chronik: ...`` line a refused start printed (asserting status 2 and no traceback)."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("chronik: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@contextmanager
def running_broker(data_dir: Path, *extra_args: str) -> Iterator[BrokerProcess]:
    """A started broker, stopped cleanly on exit; its log must hold no traceback (an unexpected handler error)."""
    proc = BrokerProcess(data_dir, *extra_args).start()
    try:
        yield proc
    finally:
        proc.stop()
        assert "Traceback" not in proc.output(), proc.output()


def free_ports(count: int) -> list[int]:
    """``count`` loopback ports free a moment ago (bound to port 0, then released), for a
    process that must be told its ports before it starts."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
