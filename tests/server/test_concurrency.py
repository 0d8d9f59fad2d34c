"""The adaptive limit of requests in flight (``api/concurrency.py``), driven with a fake
clock: it falls while answers are slow, never below its floor, stays while they are
near the target, and climbs back to ``--max-inflight`` once they are quick or the node
is idle; a node that is not busy never lowers it."""

from __future__ import annotations

from fastpaca_server.api.concurrency import BUSY_SAMPLES, WINDOW_SECONDS, AdaptiveLimit
from hypothesis import given, settings
from hypothesis import strategies as st

TARGET = 0.010


def _window(limit: AdaptiveLimit, now: float, latency: float, answers: int) -> float:
    """``answers`` answers of ``latency`` s spread over one window from ``now``; returns
    the time after it."""
    for index in range(answers):
        limit.answered(latency, now + WINDOW_SECONDS * index / answers)
    return now + WINDOW_SECONDS


def _drive(limit: AdaptiveLimit, latency: float, windows: int, start: float = 0.0) -> float:
    now = start
    for _ in range(windows):
        now = _window(limit, now, latency, 4 * BUSY_SAMPLES)
    limit.current(now)
    return now


def test_slow_answers_lower_the_limit_to_the_floor_and_no_further() -> None:
    limit = AdaptiveLimit(64, TARGET)
    assert limit.current(0.0) == 64
    now = _drive(limit, 0.200, 2)
    assert limit.current(now) <= 64 // 2, "20x the target for 2 windows: the limit barely moved"
    now = _drive(limit, 0.200, 100, start=now)
    assert limit.current(now) == 8  # an eighth of --max-inflight


def test_quick_answers_bring_it_back_to_the_ceiling_and_no_further() -> None:
    limit = AdaptiveLimit(64, TARGET)
    now = _drive(limit, 0.200, 40)
    assert limit.current(now) == 8
    now = _drive(limit, TARGET / 4, 10, start=now)
    assert 8 < limit.current(now) < 64
    now = _drive(limit, TARGET / 4, 100, start=now)
    assert limit.current(now) == 64


def test_answers_near_the_target_hold_it() -> None:
    limit = AdaptiveLimit(64, TARGET)
    now = _drive(limit, TARGET * 1.2, 3)
    held = limit.current(now)
    assert 8 < held < 64
    now = _drive(limit, TARGET * 0.75, 50, start=now)  # between half the target and it
    assert limit.current(now) == held


def test_an_idle_node_is_back_at_its_ceiling_within_two_seconds() -> None:
    limit = AdaptiveLimit(64, TARGET)
    now = _drive(limit, 0.200, 40)
    assert limit.current(now) == 8
    # Nothing answered for 2 s: the next admission sees the whole ceiling again.
    assert limit.current(now + 2.0) == 64


def test_a_few_slow_answers_are_not_load() -> None:
    limit = AdaptiveLimit(64, TARGET)
    now = 0.0
    for _ in range(50):  # a slow export or preview now and then, never busy
        now = _window(limit, now, 5.0, BUSY_SAMPLES - 1)
    assert limit.current(now) == 64


def test_a_slow_minority_does_not_lower_it() -> None:
    limit = AdaptiveLimit(64, TARGET)
    now = 0.0
    for _ in range(50):  # the median is quick: one answer in three is slow
        for index in range(3 * BUSY_SAMPLES):
            latency = 1.0 if index % 3 == 0 else TARGET / 4
            limit.answered(latency, now + WINDOW_SECONDS * index / (3 * BUSY_SAMPLES))
        now += WINDOW_SECONDS
    assert limit.current(now) == 64


def test_a_target_of_zero_keeps_the_limit_fixed() -> None:
    limit = AdaptiveLimit(64, 0.0)
    now = _drive(limit, 5.0, 40)
    assert limit.current(now) == 64
    assert not limit.adaptive


def test_small_ceilings() -> None:
    assert AdaptiveLimit(4, TARGET).floor == 1
    one = AdaptiveLimit(1, TARGET)
    _drive(one, 1.0, 20)
    assert one.current(10.0) == 1


@settings(max_examples=200, deadline=None)
@given(
    ceiling=st.integers(1, 512),
    latencies=st.lists(st.floats(0, 2.0), min_size=1, max_size=400),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=400),
)
def test_the_limit_stays_between_its_floor_and_its_ceiling(
    ceiling: int, latencies: list[float], gaps: list[float]
) -> None:
    limit = AdaptiveLimit(ceiling, TARGET)
    now = 0.0
    for latency, gap in zip(latencies, gaps * (len(latencies) // len(gaps) + 1), strict=False):
        now += gap
        limit.answered(latency, now)
        assert limit.floor <= limit.current(now) <= ceiling
