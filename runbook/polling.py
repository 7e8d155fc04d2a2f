"""The polling cadence: one home for the executor, the Airflow trigger and the forecast.

An execution is polled every ``poll_interval`` at first, then every tenth of the time
it has run so far (:data:`POLL_FRACTION`), at most every ``max_poll_interval``; each
wait is shortened by up to a tenth (:data:`JITTER`), so that thousands of executions
triggered together do not poll together. :func:`noticed` is the same schedule seen from
outside: when a poll first sees an execution's end, the jitter at its mean.
"""

from __future__ import annotations

import bisect
import functools
import math
import random

__all__ = ["JITTER", "JITTER_MEAN", "POLL_FRACTION", "jittered", "noticed", "poll_wait"]

POLL_FRACTION = 0.1
"""Poll every tenth of the time an execution has run so far, within the step's bounds:
detection lags at most a tenth of the running time (or poll_interval, if longer)."""
JITTER = (0.9, 1.0)
"""Each wait is its schedule's times a factor drawn uniformly from this range."""
JITTER_MEAN = sum(JITTER) / 2


def poll_wait(elapsed: float, low: float, high: float) -> float:
    """The wait before the next poll of an execution running for ``elapsed`` seconds:
    ``low``, growing with the running time (POLL_FRACTION) up to ``high``."""
    return min(high, max(low, elapsed * POLL_FRACTION))


def jittered(wait: float, rng: random.Random) -> float:
    """``wait``, shortened by the jitter."""
    return wait * rng.uniform(*JITTER)


def noticed(took: float, low: float, high: float) -> float:
    """When a poll first sees the end of an execution that took ``took`` seconds from
    its trigger, polled between ``low`` and ``high``, the jitter at its mean. The waits
    are ``low`` at first, then grow with the running time, then stay at ``high``: the
    first and last phases are counted, the middle one looked up in the polls' times
    (:func:`_growing`, made once per ``low`` and ``high``), so a day at 1 ms polls costs
    no more than a minute at 5 s, and the forecast's hundreds of thousands of past
    executions cost a lookup each."""
    if took <= 0:
        return 0.0
    wait = low * JITTER_MEAN
    if took <= low / POLL_FRACTION:  # past it, the wait is a tenth of the time
        return math.ceil(took / wait) * wait
    seen = _growing(low, high)
    first = bisect.bisect_left(seen, took)
    if first < len(seen):
        return seen[first]
    last = seen[-1]
    wait = high * JITTER_MEAN
    return last + math.ceil((took - last) / wait) * wait


@functools.lru_cache(maxsize=256)
def _growing(low: float, high: float) -> tuple[float, ...]:
    """The polls' times while the waits grow with the running time: from the first
    poll past ``low / POLL_FRACTION``, each a tenth of the time later (the jitter at its
    mean), to the first whose next wait would reach ``high``."""
    wait = low * JITTER_MEAN
    seen = (math.floor(low / POLL_FRACTION / wait) + 1) * wait
    times = [seen]
    while seen * POLL_FRACTION < high:
        seen += seen * POLL_FRACTION * JITTER_MEAN
        times.append(seen)
    return tuple(times)
