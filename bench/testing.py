"""How fast the test broker (chronik.testing, the pytest plugin) starts, answers and goes away (issue 17).

    python bench/testing.py [--cold 10] [--warm 40] [--topics 100] [--repeat 3] [--backend durable]
                            [--json bench/results/testing.json]

Rows (times from entering ``run_broker()`` to leaving it):

* ``imports``: importing the broker code (``chronik.broker``: the protocol
  layer, kio) in a fresh process, as a session's first fixture does once.
* ``cold``: then the first broker in that process.  ``--cold`` processes,
  one broker each.
* ``warm``: later brokers in one process (every broker of a session after the
  first: ``restart()``, ``run_broker()`` per test).
* ``start->listening``: until ``run_broker()`` returns; ``start->metadata``:
  until a real client's first Metadata succeeds (a confluent-kafka
  ``AdminClient``, created once the address is known, and its ``list_topics``);
  ``teardown``: leaving the ``with`` block (logs closed, threads joined,
  folder removed).
* ``suite +N topics``: a pytest run of N tests that each take ``chronik_topic``
  minus the same N tests without it (both in fresh processes, plugin
  installed in both; best of ``--repeat`` interleaved runs of each, each
  kind in a project folder of its own kept across its runs): what
  the broker and the topics add to a suite, imports, start and teardown
  included; then, in one process, what N
  ``create_topic`` calls and the teardown of a broker with N partitions cost;
  then the first run of each kind in its new folder (see :func:`suite_rows`).

Targets (issue 17, durable backend): start->metadata p50 <= 300 ms and
p99 <= 500 ms, teardown <= 200 ms, +100 topics <= 2 s.

Imports are timed as a user's installed copy runs them: from ``.pyc`` files.
A first line says how many chronik modules have no up-to-date ``.pyc`` (an
editable checkout under ``PYTHONDONTWRITEBYTECODE``): those compile from
source in every process, which adds to every row; ``python -m compileall
src/chronik`` (as ``pip install`` does) before comparing figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stats import percentile_ms

HERE = Path(__file__).resolve().parent


def modules_without_bytecode() -> tuple[int, int]:
    """(chronik modules without an up-to-date .pyc, chronik modules)."""
    import importlib.util

    import chronik

    sources = list(Path(chronik.__file__).parent.rglob("*.py"))
    stale = 0
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists() or cached.stat().st_mtime < source.stat().st_mtime:
            stale += 1
    return stale, len(sources)


def one_broker(backend: str) -> dict[str, float]:
    """Start a broker, wait for a Metadata answer, stop it; the three times in seconds."""
    from confluent_kafka.admin import AdminClient

    from chronik.testing import run_broker

    started = time.perf_counter()
    with run_broker(wal_backend=backend) as broker:
        listening = time.perf_counter()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        admin.list_topics(timeout=10)
        answered = time.perf_counter()
        del admin
        leaving = time.perf_counter()
    stopped = time.perf_counter()
    return {"listening": listening - started, "metadata": answered - started, "teardown": stopped - leaving}


def topics_in_process(backend: str, count: int) -> dict[str, float]:
    """What the suite row is made of, on a warm broker: ``count`` create_topic calls, then the
    teardown of a broker holding that many partitions (each closes with a durable recovery point)."""
    from chronik.testing import run_broker

    with run_broker(wal_backend=backend) as broker:  # a first broker: the imports are paid here
        pass
    with run_broker(wal_backend=backend) as broker:
        started = time.perf_counter()
        for n in range(count):
            broker.create_topic(f"topic-{n}")
        created = time.perf_counter()
    stopped = time.perf_counter()
    return {"create_each_ms": (created - started) / count * 1000, "teardown_s": stopped - created}


def child(backend: str, count: int) -> None:
    """``--child``: the import of the broker code, then ``count`` brokers in this process; one JSON line each."""
    import confluent_kafka.admin  # noqa: F401  (imported before the clock, as a user's suite does)

    import chronik.testing  # noqa: F401  (what loading the pytest plugin imports: nothing heavy)

    started = time.perf_counter()
    import chronik.broker  # noqa: F401
    import chronik.testing._embedded  # noqa: F401

    print(json.dumps({"imports": time.perf_counter() - started}), flush=True)
    for _ in range(count):
        print(json.dumps(one_broker(backend)), flush=True)


def in_child(backend: str, count: int) -> list[dict[str, float]]:
    done = subprocess.run([sys.executable, __file__, "--child", "--backend", backend, "--warm", str(count)],
                          capture_output=True, text=True, check=True, timeout=300)
    return [json.loads(line) for line in done.stdout.splitlines()]


USER_TEST = '''
import pytest


@pytest.mark.parametrize("n", range({count}))
def test_with_topic(chronik_topic, n):
    assert chronik_topic
'''
PLAIN_TEST = USER_TEST.replace("chronik_topic, n", "n").replace("assert chronik_topic", "pass")


def user_project(folder: Path, source: str, backend: str) -> Path:
    """A user's project: one test file and its pytest.ini."""
    folder.mkdir()
    (folder / "test_user.py").write_text(source)
    (folder / "pytest.ini").write_text(
        f"[pytest]\nchronik_wal_backend = {backend}\nasyncio_default_fixture_loop_scope = function\n")
    return folder


def suite_seconds(project: Path) -> float:
    """One pytest run of ``project``, in a fresh process, from its own folder."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
                   cwd=project, capture_output=True, check=True, timeout=300)
    return time.perf_counter() - started


def suite_rows(count: int, backend: str, repeat: int) -> tuple[float, float, float, float]:
    """(with, without chronik_topic: the best of ``repeat`` interleaved runs; then the first run of each).

    Each kind runs in a project folder of its own, kept across its runs, as a
    user's project is.  The first runs are timed apart: where hypothesis is
    installed, importing the broker code (kio registers hypothesis strategies
    for its types) makes hypothesis build its Unicode table, about 1 s of CPU,
    cached in the project's ``.hypothesis/`` folder; a user's project pays it
    once (a CI job in a fresh checkout, once per job).
    """
    with tempfile.TemporaryDirectory(prefix="chronik-bench-") as root:
        with_topic = user_project(Path(root, "with"), USER_TEST.format(count=count), backend)
        plain = user_project(Path(root, "plain"), PLAIN_TEST.format(count=count), backend)
        first = (suite_seconds(with_topic), suite_seconds(plain))
        pairs = [(suite_seconds(with_topic), suite_seconds(plain)) for _ in range(repeat)]
    return min(p[0] for p in pairs), min(p[1] for p in pairs), first[0], first[1]


def row(label: str, samples: list[dict[str, float]]) -> dict[str, object]:
    out: dict[str, object] = {"row": label, "n": len(samples)}
    for key in ("listening", "metadata", "teardown"):
        values = [s[key] for s in samples]
        out[key] = {"p50_ms": percentile_ms(values, 0.5), "p99_ms": percentile_ms(values, 0.99),
                    "max_ms": max(values) * 1000}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=10, help="fresh processes for the cold row")
    parser.add_argument("--warm", type=int, default=40, help="brokers in one process for the warm row")
    parser.add_argument("--topics", type=int, default=100, help="tests with chronik_topic in the suite row (0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="suite runs of each kind (the best counts)")
    parser.add_argument("--backend", default="durable", help="durable (default), native, python or memory")
    parser.add_argument("--json", default=str(HERE / "results" / "testing.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-topics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.backend, args.warm)
        return
    if args.child_topics:
        print(json.dumps(topics_in_process(args.backend, args.topics)))
        return

    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"backend {args.backend}")
    stale, modules = modules_without_bytecode()
    if stale:
        print(f"note: {stale} of {modules} chronik modules have no up-to-date .pyc and compile from source in every "
              "process (python -m compileall src/chronik, as pip install does, to time what users run)")
    colds = [in_child(args.backend, 1) for _ in range(args.cold)]
    imports = [c[0]["imports"] for c in colds]
    cold = [c[1] for c in colds]
    warm = in_child(args.backend, args.warm + 1)[2:]
    rows = [row("cold", cold), row("warm", warm)]
    print(f"importing the broker code (chronik.broker and what it imports): p50 {percentile_ms(imports, 0.5):.0f} ms, "
          f"p99 {percentile_ms(imports, 0.99):.0f} ms; a session's first broker pays it once, before the cold row")
    header = f"{'row':<6}{'n':>4}  {'start->listening p50/p99':>26}  {'start->metadata p50/p99':>25}  {'teardown p50/p99/max':>22}"
    print(header)
    print("-" * len(header))
    for r in rows:
        lst, meta, down = r["listening"], r["metadata"], r["teardown"]  # type: ignore[index]
        print(f"{r['row']:<6}{r['n']:>4}  {lst['p50_ms']:>14.0f} / {lst['p99_ms']:<5.0f} ms"  # type: ignore[index]
              f"  {meta['p50_ms']:>13.0f} / {meta['p99_ms']:<5.0f} ms"  # type: ignore[index]
              f"  {down['p50_ms']:>8.0f} / {down['p99_ms']:.0f} / {down['max_ms']:.0f} ms")  # type: ignore[index]
    report: dict[str, object] = {"backend": args.backend, "load_average": os.getloadavg(), "rows": rows,
                                 "imports_p50_ms": percentile_ms(imports, 0.5)}
    if args.topics:
        # interleaved, best of --repeat: on a busy machine the minimum is the least disturbed run
        with_topics, plain, first_with, first_plain = suite_rows(args.topics, args.backend, args.repeat)
        added = with_topics - plain
        done = subprocess.run([sys.executable, __file__, "--child-topics", "--backend", args.backend,
                               "--topics", str(args.topics)], capture_output=True, text=True, check=True, timeout=300)
        parts = json.loads(done.stdout)
        print(f"suite +{args.topics} topics: {with_topics:.2f} s with chronik_topic, {plain:.2f} s without: "
              f"+{added:.2f} s (target <= 2 s)")
        print(f"  of which, in one process: create_topic {parts['create_each_ms']:.1f} ms each, "
              f"teardown with {args.topics} partitions {parts['teardown_s']:.2f} s")
        print(f"  first run of each in a new project folder: +{first_with - first_plain:.2f} s "
              f"({first_with:.2f} s, {first_plain:.2f} s; with hypothesis installed this includes building "
              "its Unicode table, cached in .hypothesis/)")
        report["suite"] = {"tests": args.topics, "with_topic_s": with_topics, "plain_s": plain, "added_s": added,
                           "first_run_with_topic_s": first_with, "first_run_plain_s": first_plain,
                           **parts}
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"json: {args.json}")


if __name__ == "__main__":
    main()
