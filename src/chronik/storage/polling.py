"""When polling for the sync thread pays off, and when it does not.

The native sync worker can poll instead of sleeping on both sides of each
hand-off (see :meth:`~chronik.storage.sync_worker.SyncWorker.set_polling`):
its C thread watches for the next job, the waiting trio task reads the
eventfd between scheduler rounds.  On a machine with a spare core that saves
two thread wake-ups per commit (~80 us on the development VM, as much as a
fast ``fdatasync``).  On a machine whose cores are all busy it does the
opposite: a spinning thread holds a core the other side needs, the kernel
favours sleepers over spinners, and measured here a lone appender's p50 went
from 0.13 ms (sleeping) to 0.44 ms (polling) with one CPU-bound process
beside it.

:class:`PollGovernor` therefore keeps polling on only while it measurably
helps.  It is fed one number per job, the *hand-off overhead*: the time from
submitting the job to noticing its end, minus the time the thread spent on
the job itself -- what the two hand-offs cost.  Jobs are judged in epochs of
:attr:`PollGovernor.epoch_jobs`; each epoch's median overhead is compared
with the median of the latest epoch spent sleeping (the baseline):

* polling, and the median is at most :data:`PAYOFF` x the baseline: keep
  polling, and re-measure the baseline every :data:`REMEASURE_EPOCHS`
  epochs (conditions change);
* polling, and it is not: sleep for ``backoff`` epochs (1, doubling on each
  failed probe up to :data:`MAX_BACKOFF_EPOCHS`, back to 1 after a
  successful one), then probe polling again;
* the first epoch polls (the optimistic guess for a lone process), the
  second sleeps to measure the first baseline.

Pure logic on numbers: no clock, no I/O, no trio -- the worker measures, the
governor decides.
"""

from __future__ import annotations

from statistics import median

#: Polling must cut the median hand-off overhead to this fraction of sleeping's.
PAYOFF = 0.8
#: While polling pays, one epoch in this many sleeps to refresh the baseline.
REMEASURE_EPOCHS = 64
#: The longest run of sleeping epochs between two probes of polling.
MAX_BACKOFF_EPOCHS = 64
#: Jobs per epoch.
EPOCH_JOBS = 32


class PollGovernor:
    """Decides, epoch by epoch, whether the hand-offs poll (see the module docstring).

    ``polling`` is the current decision; :meth:`observe` returns True when it
    changed (the caller then tells its thread).
    """

    def __init__(self, epoch_jobs: int = EPOCH_JOBS) -> None:
        if epoch_jobs < 1:
            raise ValueError(f"epoch_jobs must be >= 1, not {epoch_jobs}")
        self.epoch_jobs = epoch_jobs
        self.polling = True
        self.baseline_ns: float | None = None  # median overhead of the latest sleeping epoch
        self.last_polling_ns: float | None = None  # median overhead of the latest polling epoch
        self.probes_failed = 0
        self._samples: list[int] = []
        self._backoff = 1  # sleeping epochs after the next failed probe
        self._sleeps_left = 0  # sleeping epochs before the next probe
        self._polled_epochs = 0  # polling epochs since the baseline was measured

    def observe(self, overhead_ns: int) -> bool:
        """Record one job's hand-off overhead; True if ``polling`` changed."""
        self._samples.append(overhead_ns)
        if len(self._samples) < self.epoch_jobs:
            return False
        epoch_median = median(self._samples)
        self._samples.clear()
        was_polling = self.polling
        if self.polling:
            self.last_polling_ns = epoch_median
            self._polled_epochs += 1
            if self.baseline_ns is None or self._polled_epochs >= REMEASURE_EPOCHS:
                self.polling = False  # (re)measure what sleeping costs, then judge
                self._sleeps_left = 0
            elif epoch_median > PAYOFF * self.baseline_ns:
                self.polling = False
                self.probes_failed += 1
                self._sleeps_left = self._backoff - 1
                self._backoff = min(2 * self._backoff, MAX_BACKOFF_EPOCHS)
            else:
                self._backoff = 1
        else:
            self.baseline_ns = epoch_median
            if self._sleeps_left > 0:
                self._sleeps_left -= 1
            else:
                self.polling = True
                self._polled_epochs = 0
        return self.polling != was_polling
