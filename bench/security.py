"""SASL_SSL against PLAINTEXT in the same run: batch produce and consume throughput, and new SCRAM logins per second.

Run:  python bench/security.py [--messages 200000] [--logins 200] [--json PATH]

Starts ``python -m chronik serve`` with a PLAINTEXT and a SASL_SSL listener
(certificates made with ``trustme`` in a temporary directory, one
SCRAM-SHA-512 user added with ``python -m chronik users add``), then, for each
listener in turn, one confluent-kafka producer sends ``--messages`` x 256 B
(acks=1, linger.ms=5) and one consumer reads them back (the same client code
as ``bench/broker.py``).  Then ``--logins`` sequential SCRAM-SHA-512 logins
over SASL_SSL (a fresh AdminClient each, until its Metadata answers).

Prints msg/s per listener and the SASL_SSL/PLAINTEXT ratio for produce and
consume (target: >= 0.6, issue 15), and logins/s.  Exit status 1 when a
ratio misses the target.  Also the broker's CPU seconds per million messages
of each phase (from /proc, Linux only): steadier than msg/s on a busy
machine, where the clients' own work and the scheduler swing the throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import broker as bench  # noqa: E402  (bench/broker.py: the clients; it puts the repository on sys.path)

from tests.integration.brokerproc import free_ports  # noqa: E402

TARGET_RATIO = 0.6


def broker_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) the broker process has used, from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import confluent_kafka.admin
    import trustme

    with tempfile.TemporaryDirectory(prefix="chronik-bench-security-") as tmp:
        root = Path(tmp)
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
        ca.cert_pem.write_to_path(str(root / "ca.pem"))
        data = root / "data"
        subprocess.run([sys.executable, "-m", "chronik", "users", "add", "--data-dir", str(data), "--user", "bench",
                        "--mechanism", "SCRAM-SHA-512", "--password-stdin"], input="bench-pw\n", text=True, check=True,
                       capture_output=True)
        plain_port, sasl_port = free_ports(2)
        command = [sys.executable, "-m", "chronik", "serve", "--data-dir", str(data), "--wal-profile", "throughput",
                   "--set", f"listeners=PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{sasl_port}",
                   "--set", f"ssl.keystore.location={root / 'server.pem'}"]
        log = (root / "broker.log").open("w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        sasl = {"security.protocol": "SASL_SSL", "ssl.ca.location": str(root / "ca.pem"),
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bench", "sasl.password": "bench-pw"}
        results: dict[str, float] = {}
        try:
            for name, port, conf in (("PLAINTEXT", plain_port, {}), ("SASL_SSL", sasl_port, sasl)):
                bootstrap = f"127.0.0.1:{port}"
                bench.COMMON_CLIENT.clear()
                bench.COMMON_CLIENT.update({"socket.nagle.disable": True, "log_level": 3, **conf})
                bench.wait_for_metadata(bootstrap, 30)
                topic = f"bench-security-{uuid.uuid4().hex[:6]}"
                admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap, **conf})
                admin.create_topics([confluent_kafka.admin.NewTopic(topic, 1, 1)])[topic].result(30)
                for kind in ("produce", "consume"):
                    run = (bench.client_batch_produce(bootstrap, topic, 1, args.messages, "1", 5) if kind == "produce"
                           else bench.client_consume(bootstrap, topic, 1, args.messages))
                    cpu = broker_cpu_seconds(process.pid)
                    out = run()
                    results[f"{kind} {name}"] = out["count"] / (out["finished"] - out["started"])
                    if cpu is not None:
                        results[f"{kind} {name} broker CPU"] = (broker_cpu_seconds(process.pid) - cpu) * 1e6 / out["count"]
            started = time.monotonic()
            for _ in range(args.logins):
                admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": f"127.0.0.1:{sasl_port}", **sasl})
                admin.list_topics(timeout=10)
                del admin
            results["SCRAM-SHA-512 logins/s"] = args.logins / (time.monotonic() - started)
        except BaseException:
            print((root / "broker.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            process.terminate()
            process.wait(30)
            log.close()

    ratios = {kind: results[f"{kind} SASL_SSL"] / results[f"{kind} PLAINTEXT"] for kind in ("produce", "consume")}
    for key, value in results.items():
        unit = " msg/s" if key.split()[-1] in ("PLAINTEXT", "SASL_SSL") else " s per 1M msgs" if "CPU" in key else ""
        print(f"{key:32s} {value:12,.{1 if 'CPU' in key else 0}f}{unit}")
    for kind, ratio in ratios.items():
        print(f"{kind} SASL_SSL / PLAINTEXT         {ratio:12.2f}  (target >= {TARGET_RATIO})")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratios": ratios, "target": TARGET_RATIO}, indent=2))
    return 0 if all(r >= TARGET_RATIO for r in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
