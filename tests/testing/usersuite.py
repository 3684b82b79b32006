"""Run a user's test files through pytester, the way their project would: a pytest subprocess
that finds the chronik plugin through its ``pytest11`` entry point (nothing else loads it).

Every run also leaves a leak report: when each pytest process (controller or
xdist worker) unconfigures -- after the session fixtures are torn down -- a
conftest hook writes the Python threads still alive, the sockets still open and the
files still open in a broker's temporary data folder (``chronik-test-*``) to
``leaks-<worker>.json``.  The run gets a fresh ``TMPDIR`` of its own, where no
``chronik-test-*`` folder may be left once every process has finished.
"""

from __future__ import annotations

import json

import pytest

LEAK_REPORT_CONFTEST = '''
import json, os, threading


def pytest_unconfigure(config):
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    report = {
        "threads": sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()),
        "sockets": [target for target in fds if target.startswith("socket:")],
        "files": [target for target in fds if "/chronik-test-" in target],
    }
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ["CHRONIK_LEAK_DIR"], f"leaks-{worker}.json"), "w") as out:
        json.dump(report, out)
'''

TRIO_CACHE_THREAD = "Trio thread "
"""trio's process-wide worker-thread cache (``trio.to_thread``): an idle worker waits
10 s to be reused, then exits by itself.  The broker's file work runs on them; they
are trio's, shared by every trio loop in the process, not threads the broker owns."""


def run_user_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], *args: str,
                   ini: str = "", timeout: float = 180) -> pytest.RunResult:
    """Write ``files`` (name -> source) and an ini, run pytest on them in a subprocess."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n" + ini)
    pytester.makeconftest(LEAK_REPORT_CONFTEST)
    for name, source in files.items():
        pytester.path.joinpath(name).write_text(source)
    tmp = pytester.path / "tmp"
    tmp.mkdir(exist_ok=True)
    reports = pytester.path / "leaks"
    reports.mkdir(exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("CHRONIK_LEAK_DIR", str(reports))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def leak_reports(pytester: pytest.Pytester) -> dict[str, dict[str, list[str]]]:
    folder = pytester.path / "leaks"
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("leaks-*.json"))}


def assert_no_leaks(pytester: pytest.Pytester) -> None:
    """Every pytest process of the run left no thread of its own, no socket and no file of a
    broker's open, and the run no folder."""
    reports = leak_reports(pytester)
    assert reports, "no leak report written"
    for worker, report in reports.items():
        threads = [name for name in report["threads"] if not name.startswith(TRIO_CACHE_THREAD)]
        assert threads == [], (worker, report)
        assert report["sockets"] == [], (worker, report)
        assert report["files"] == [], (worker, report)
    assert list((pytester.path / "tmp").iterdir()) == []
