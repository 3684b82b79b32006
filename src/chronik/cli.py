"""Command line: ``python -m chronik <command>``.

Commands:
  serve   run a broker node (see ``serve --help`` for every option)
  info    print one JSON object describing this install (version, WAL backends)
  users   manage SASL/SCRAM users in a stopped broker's data directory
          (``users add --data-dir DIR --user NAME --mechanism SCRAM-SHA-512 --password-stdin``,
          ``users list --data-dir DIR``, ``users delete --data-dir DIR --user NAME [--mechanism M]``)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
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
    users = commands.add_parser("users", help="manage SASL/SCRAM users offline (the broker must be stopped)",
                                description="Add, list or delete SCRAM users in a stopped broker's data directory "
                                            "(a single node's; in cluster mode use AlterUserScramCredentials).")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user or change its password (one mechanism)")
    add.add_argument("--user", required=True)
    add.add_argument("--mechanism", required=True, choices=("SCRAM-SHA-256", "SCRAM-SHA-512"))
    add.add_argument("--password-stdin", action="store_true", required=True,
                     help="read the password from standard input (its first line)")
    add.add_argument("--iterations", type=int, default=None, help="SCRAM iterations (default 4096)")
    listing = actions.add_parser("list", help="print the users and their mechanisms")
    delete = actions.add_parser("delete", help="delete a user's credential(s)")
    delete.add_argument("--user", required=True)
    delete.add_argument("--mechanism", choices=("SCRAM-SHA-256", "SCRAM-SHA-512"),
                        help="only this mechanism's credential (default: all of the user's)")
    for action in (add, listing, delete):
        action.add_argument("--data-dir", required=True, help="the broker's data directory")
    return parser


def _users(args: argparse.Namespace) -> int:
    """``users add/list/delete``: through the metadata log of the (stopped, locked) data directory."""
    import trio

    from .broker import RAFT_DIR, open_broker
    from .config import BrokerConfig, ConfigError
    from .metadata.commands import DeleteScramCredential, UpsertScramCredential
    from .metadata.credentials import SCRAM_MECHANISMS
    from .security.scram import make_credential
    from .storage.lock import DataDirectoryError

    data_dir = Path(args.data_dir)
    if (data_dir / RAFT_DIR).exists():
        print(f"error: {data_dir} belongs to a cluster node; add users online (AlterUserScramCredentials)", file=sys.stderr)
        return 2
    password = ""
    if args.action == "add":
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("error: no password on standard input", file=sys.stderr)
            return 2
    try:
        config = BrokerConfig(data_dir=data_dir, log_level="warning")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        async with open_broker(config) as broker:
            if args.action == "add":
                mechanism = SCRAM_MECHANISMS[args.mechanism]
                credential = make_credential(mechanism, password, args.iterations)
                await broker.submit(UpsertScramCredential(user=args.user, mechanism=mechanism.name,
                                                          credential=credential.to_json()))
                print(f"user {args.user}: {mechanism.name} credential stored")
            elif args.action == "list":
                for user, mechanism in sorted(broker.image.security.credentials):
                    print(f"{user}\t{mechanism}")
            else:
                mechanisms = [args.mechanism] if args.mechanism else list(SCRAM_MECHANISMS)
                found = [m for m in mechanisms if broker.image.security.credential(args.user, m) is not None]
                if not found:
                    print(f"error: user {args.user} has no such credential", file=sys.stderr)
                    return 1
                for mechanism_name in found:
                    await broker.submit(DeleteScramCredential(user=args.user, mechanism=mechanism_name))
                print(f"user {args.user}: deleted {', '.join(found)}")
        return 0

    try:
        return trio.run(run)
    except (DataDirectoryError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from .serve import serve_main

        return serve_main(args)
    if args.command == "users":
        return _users(args)
    if args.command == "info":
        print(json.dumps(_info(), indent=2))
        return 0
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown ones


if __name__ == "__main__":
    sys.exit(main())
