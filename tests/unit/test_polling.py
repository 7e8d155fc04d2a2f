"""When polling sees an execution end: the looked-up schedule equals the walked one."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from runbook.polling import JITTER_MEAN, POLL_FRACTION, noticed


def walked(took: float, low: float, high: float) -> float:
    """The schedule walked poll by poll through its growing phase: the definition."""
    if took <= 0:
        return 0.0
    wait = low * JITTER_MEAN
    grows_from = low / POLL_FRACTION
    if took <= grows_from:
        return math.ceil(took / wait) * wait
    seen = (math.floor(grows_from / wait) + 1) * wait
    while seen < took and seen * POLL_FRACTION < high:
        seen += seen * POLL_FRACTION * JITTER_MEAN
    if seen >= took:
        return seen
    wait = high * JITTER_MEAN
    return seen + math.ceil((took - seen) / wait) * wait


@given(
    took=st.floats(-1, 200_000, allow_nan=False),
    low=st.floats(0.001, 600),
    factor=st.floats(1, 1_000),
)
def test_noticed_is_the_walked_schedule(took: float, low: float, factor: float) -> None:
    high = low * factor
    assert noticed(took, low, high) == walked(took, low, high)


def test_noticed_at_the_phases_edges() -> None:
    # 5 s polls (4.75 s at the jitter's mean) up to 50 s, then a tenth, up to 60 s
    assert noticed(0, 5, 60) == 0.0
    assert noticed(4.75, 5, 60) == 4.75
    assert noticed(4.76, 5, 60) == 9.5
    assert noticed(50, 5, 60) == walked(50, 5, 60) == 52.25
    for took in (50.01, 52.25, 52.26, 599, 600, 601, 3_600, 86_400):
        assert noticed(took, 5, 60) == walked(took, 5, 60)
        assert noticed(took, 5, 60) >= took
    assert noticed(3_600, 5, 60) - 3_600 < 60  # seen within a wait of its end
