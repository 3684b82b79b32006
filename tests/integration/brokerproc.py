"""A Chronik broker in a child process, as users run it: ``python -m chronik serve``.

Tests that use real Kafka clients talk to it over real sockets.  The broker
binds port 0 on 127.0.0.1 (no port races); the bound port is read from its
"listening for Kafka clients" log line and kept across :meth:`restart`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_LISTENING = re.compile(r"listening for Kafka clients on [^:]+:(\d+)")


class BrokerProcess:
    def __init__(self, data_dir: Path, *extra_args: str, port: int = 0, config: Path | None = None) -> None:
        """``config``: start with ``--config FILE`` alone (plus ``extra_args``); the file must
        name ``data_dir`` and the Kafka listener ``127.0.0.1:port``."""
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.port = port
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "BrokerProcess":
        address = f"127.0.0.1:{self.port}"
        if self.config is not None:
            cmd = [sys.executable, "-m", "chronik", "serve", "--config", str(self.config), *self.extra_args]
        else:
            cmd = [sys.executable, "-m", "chronik", "serve", "--data-dir", str(self.data_dir),
                   "--listen", address, "--advertise", address, *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log_lines.append(line.rstrip("\n"))
                match = _LISTENING.search(line)
                if match:
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
            for line in self.log_lines:
                if regex.search(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r} in:\n{self.output()}")
