"""Seeded simulation of 3- and 5-voter clusters: safety on every step, liveness once healed.

Each seed runs a chaos phase (crashes and restarts, partitions, drops,
duplicates, delays, slow disks, random proposals), then heals everything and
requires that, within ``LIVENESS_BOUND`` simulated seconds, a leader followed
by a majority exists and a proposal made after the heal is committed on every
node.  Safety (see ``simulation.py``) is checked after every event.

Environment:

* ``CHRONIK_SIM_SEED=1234`` -- run only that seed (as the failure message says);
* ``CHRONIK_SIM_SEEDS=N`` -- seeds per cluster size in the normal run (default 200);
* ``CHRONIK_SIM_SOAK=N`` -- also run the soak test: N seeds with a 30 s chaos phase.
"""

from __future__ import annotations

import os

import pytest

from .simulation import SafetyViolation, Simulation

SEEDS = int(os.environ.get("CHRONIK_SIM_SEEDS", "200"))
ONLY_SEED = os.environ.get("CHRONIK_SIM_SEED")
SOAK_SEEDS = int(os.environ.get("CHRONIK_SIM_SOAK", "0"))
CHAOS_SECONDS = 5.0
SOAK_CHAOS_SECONDS = 30.0
LIVENESS_BOUND = 5.0  # simulated seconds from heal to a commit on every node


def seeds(default: range) -> list[int]:
    return [int(ONLY_SEED)] if ONLY_SEED is not None else list(default)


def run_seed(seed: int, nodes: int, chaos_seconds: float) -> int:
    """Run one seed; returns the number of events processed."""
    sim = Simulation(seed, nodes, pre_vote=seed % 2 == 0)
    sim.schedule_chaos(0.0, chaos_seconds)
    sim.heal(chaos_seconds)
    deadline = chaos_seconds + LIVENESS_BOUND
    sim.schedule_proposals(chaos_seconds, deadline, rate=20.0)
    at = chaos_seconds
    while at < deadline and not (sim.leader() is not None and sim.committed_everywhere_since(chaos_seconds)):
        at += 0.05
        sim.run_until(at)
    if at >= deadline:
        raise sim.fail(f"no commit on every node within {LIVENESS_BOUND}s of healing (leader {sim.leader()})")
    return sim.steps


def run_seeds(seed_list: list[int], nodes: int, chaos_seconds: float, test: str) -> int:
    steps = 0
    for seed in seed_list:
        try:
            steps += run_seed(seed, nodes, chaos_seconds)
        except (SafetyViolation, AssertionError) as exc:
            rerun = f"CHRONIK_SIM_SEED={seed} python -m pytest -q 'tests/cluster/test_raft_simulation.py::{test}'"
            raise AssertionError(f"{nodes} nodes, seed {seed} failed; rerun with:\n  {rerun}\n{exc}") from exc
    return steps


@pytest.mark.parametrize("nodes", [3, 5])
def test_simulation(nodes: int) -> None:
    steps = run_seeds(seeds(range(SEEDS)), nodes, CHAOS_SECONDS, f"test_simulation[{nodes}]")
    assert steps > 0


@pytest.mark.skipif(not SOAK_SEEDS, reason="soak runs only with CHRONIK_SIM_SOAK=<seeds>")
@pytest.mark.parametrize("nodes", [3, 5])
def test_soak(nodes: int) -> None:
    run_seeds(seeds(range(10_000, 10_000 + SOAK_SEEDS)), nodes, SOAK_CHAOS_SECONDS, f"test_soak[{nodes}]")


def test_same_seed_same_run() -> None:
    def fingerprint(seed: int) -> tuple[int, list[bytes], dict[int, int]]:
        sim = Simulation(seed, 5)
        sim.schedule_chaos(0.0, 1.0)
        sim.run_until(1.0)
        return sim.steps, [e.payload for e in sim.committed], dict(sim.leaders)

    assert fingerprint(7) == fingerprint(7)
    assert fingerprint(7) != fingerprint(8)


def test_snapshots_compaction_and_installs_happen_under_chaos() -> None:
    """The seeds above pick their own snapshot interval; here every seed snapshots often, in
    small chunks, so installs race with crashes, partitions, loss and truncation."""
    installs = taken = 0
    for seed in seeds(range(SEEDS // 4)):
        sim = Simulation(seed, 3 + 2 * (seed % 2), pre_vote=True, snapshot_every=4, snapshot_chunk=48)
        sim.schedule_chaos(0.0, CHAOS_SECONDS)
        sim.heal(CHAOS_SECONDS)
        sim.run_until(CHAOS_SECONDS + LIVENESS_BOUND)
        installs, taken = installs + sim.installs, taken + sim.snapshots_taken
    assert installs > 0 and taken > 0


def test_a_node_down_while_the_others_compact_catches_up_from_the_snapshot() -> None:
    sim = Simulation(3, 3, snapshot_every=5, snapshot_chunk=100)
    sim.run_until(1.0)
    victim = next(i for i in sim.ids if i != sim.leader())
    sim._schedule(1.0, "crash", (victim, 2.0))
    sim.schedule_proposals(1.0, 2.5, rate=40.0)
    sim.run_until(2.9)
    others = [sim.nodes[i] for i in sim.ids if i != victim]
    assert all(n is not None and n.log_start > sim.disks[victim].durable_end for n in others)  # compacted past it
    sim.schedule_proposals(3.5, 4.0, rate=10.0)
    sim.run_until(6.0)
    assert sim.installs >= 1
    node = sim.nodes[victim]
    assert node is not None and node.commit_end == len(sim.committed) > 0
    assert all(sim.machines[i] == sim.committed for i in sim.ids)  # every state machine: the committed log
