"""Command line: ``python -m chronik <command>``.

Commands:
  serve   run a broker node (see ``serve --help`` for every option)
  info    print one JSON object describing this install (version, WAL backends)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from . import __version__
from .config import add_serve_arguments


def _info() -> dict[str, object]:
    from .storage import COMMIT_PROFILES, DEFAULT_PROFILE, available_backends, default_backend_name
    from .storage import sync_worker

    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "wal_backends": available_backends(),
        "default_wal_backend": default_backend_name(),
        "native_extension": {
            "available": sync_worker.NATIVE_AVAILABLE,
            "error": None if sync_worker.NATIVE_AVAILABLE else str(getattr(sync_worker, "NATIVE_IMPORT_ERROR", "")),
        },
        "wal_profiles": {
            name: {
                "max_batch_appends": p.max_batch_appends,
                "max_batch_bytes": p.max_batch_bytes,
                "linger_ms": p.linger_seconds * 1000,
                "poll_ms": p.poll_seconds * 1000,
            }
            for name, p in COMMIT_PROFILES.items()
        },
        "default_wal_profile": DEFAULT_PROFILE,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chronik", description="Chronik, a Kafka-compatible broker.")
    parser.add_argument("--version", action="version", version=f"chronik {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run a broker node",
        # Each option's help names its default itself (argparse's "(default: None)"
        # would be wrong: every flag defaults to None, meaning "not given").
        description="Run a Chronik broker node until SIGINT/SIGTERM.",
    )
    add_serve_arguments(serve)
    commands.add_parser("info", help="print this install's version and WAL backends as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from .serve import serve_main

        return serve_main(args)
    if args.command == "info":
        print(json.dumps(_info(), indent=2))
        return 0
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown ones


if __name__ == "__main__":
    sys.exit(main())
