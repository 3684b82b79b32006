"""PollGovernor: polling stays on only while it cuts the hand-off overhead."""

from __future__ import annotations

import pytest

from chronik.storage.polling import MAX_BACKOFF_EPOCHS, PAYOFF, REMEASURE_EPOCHS, PollGovernor

EPOCH = 4
SLEEPING_NS = 80_000  # two thread wake-ups on the development VM
POLLING_NS = 8_000  # what polling leaves of them on a machine with a spare core
CONTENDED_NS = 400_000  # polling on a machine whose cores are all busy


def run_epoch(governor: PollGovernor, overhead_ns: int) -> bool:
    """Feed one epoch of identical jobs; True if the decision changed at its end (and only there)."""
    changes = [governor.observe(overhead_ns) for _ in range(governor.epoch_jobs)]
    assert not any(changes[:-1]), "the decision changes only at the end of an epoch"
    return changes[-1]


def test_starts_polling_then_measures_sleeping_then_keeps_polling_when_it_pays() -> None:
    governor = PollGovernor(EPOCH)
    assert governor.polling
    assert run_epoch(governor, POLLING_NS) and not governor.polling  # no baseline yet: measure one
    assert run_epoch(governor, SLEEPING_NS) and governor.polling
    assert governor.baseline_ns == SLEEPING_NS
    for _ in range(REMEASURE_EPOCHS - 1):
        assert not run_epoch(governor, POLLING_NS)
    assert governor.probes_failed == 0


def test_stops_polling_when_it_does_not_pay_and_backs_off_exponentially() -> None:
    governor = PollGovernor(EPOCH)
    run_epoch(governor, CONTENDED_NS)
    run_epoch(governor, SLEEPING_NS)
    sleeping_runs = []
    for _ in range(8):
        assert governor.polling
        assert run_epoch(governor, CONTENDED_NS) and not governor.polling  # the probe failed
        epochs = 0
        while not governor.polling:
            run_epoch(governor, SLEEPING_NS)
            epochs += 1
        sleeping_runs.append(epochs)
    assert sleeping_runs == [min(2**n, MAX_BACKOFF_EPOCHS) for n in range(8)]
    assert governor.probes_failed == 8


def test_a_successful_probe_resets_the_backoff() -> None:
    governor = PollGovernor(EPOCH)
    run_epoch(governor, POLLING_NS)
    run_epoch(governor, SLEEPING_NS)
    for _ in range(3):  # three failed probes: the next pause would be 8 epochs
        run_epoch(governor, CONTENDED_NS)
        while not governor.polling:
            run_epoch(governor, SLEEPING_NS)
    assert not run_epoch(governor, POLLING_NS)  # the machine is free again: polling pays
    run_epoch(governor, CONTENDED_NS)
    assert not governor.polling
    assert run_epoch(governor, SLEEPING_NS) and governor.polling  # paused one epoch, not eight


def test_the_baseline_is_remeasured_while_polling_pays() -> None:
    governor = PollGovernor(EPOCH)
    run_epoch(governor, POLLING_NS)
    run_epoch(governor, SLEEPING_NS)
    for _ in range(REMEASURE_EPOCHS - 1):
        run_epoch(governor, POLLING_NS)
    assert run_epoch(governor, POLLING_NS) and not governor.polling  # time to re-measure
    assert run_epoch(governor, 20_000) and governor.polling  # sleeping got cheaper
    assert governor.baseline_ns == 20_000
    assert run_epoch(governor, 18_000) and not governor.polling  # 0.9x of it: no longer pays
    assert governor.probes_failed == 1


@pytest.mark.parametrize("ratio, keeps", [(PAYOFF, True), (PAYOFF + 0.05, False)])
def test_polling_must_beat_sleeping_by_the_payoff_factor(ratio: float, keeps: bool) -> None:
    governor = PollGovernor(EPOCH)
    run_epoch(governor, POLLING_NS)
    run_epoch(governor, SLEEPING_NS)
    run_epoch(governor, round(ratio * SLEEPING_NS))
    assert governor.polling is keeps


def test_the_epoch_median_ignores_outliers() -> None:
    governor = PollGovernor(5)
    for overhead_ns in (POLLING_NS,) * 5 + (SLEEPING_NS,) * 5:
        governor.observe(overhead_ns)
    for overhead_ns in (POLLING_NS, POLLING_NS, 10 * SLEEPING_NS, POLLING_NS, 50 * SLEEPING_NS):
        governor.observe(overhead_ns)  # two descheduled jobs out of five
    assert governor.polling


def test_epoch_length_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PollGovernor(0)
