"""How many requests a node serves at once: an adaptive limit, pure (no clock, no I/O).

A fixed limit cannot be right both ways. A request admitted by a node that
is already at its highest rate only waits: by Little's law its latency is
the requests in flight divided by that rate, so a limit generous enough
for a burst (64 clients appending at once on an idle node) lets every
admitted request wait 30-100 ms once the node is saturated, and far more
while refusals take the event loop. A small limit keeps the wait short but
refuses bursts the node would have served in a few milliseconds.

So the limit moves between a floor and ``--max-inflight`` (its ceiling),
from the time admitted requests take, measured in windows of
:data:`WINDOW_SECONDS`:

- a window with at least :data:`BUSY_SAMPLES` answers whose median is over
  the target (``--latency-target``) lowers the limit in proportion (target ÷
  median, between a half and four fifths of it; not below the floor): the
  node is saturated and requests queue inside it;
- a window whose median is under half the target, or with fewer answers
  (the node is not busy), raises it by a tenth (at least one; not above the
  ceiling): a node that calms down is back at its ceiling within 2 s;
- in between it stays.

Only answers written in one piece count (a stream or an export takes as long
as its client reads); the live feeds are not admitted at all. The median,
not a high percentile: one slow export or preview must not shrink the limit
for everyone. Under a steady overload the limit settles where the median
is about the target, which keeps the admitted requests' tail near the
target too, whatever the offered load (``docs/benchmarks.md``, overload).
"""

from __future__ import annotations

import attrs

WINDOW_SECONDS = 0.05
"""The limit is reconsidered at most this often."""
BUSY_SAMPLES = 8
"""Answers in a window below which the node is not busy (it never lowers the limit then)."""
DECREASE = 0.8
FASTEST_DECREASE = 0.5
INCREASE = 0.1


@attrs.define
class AdaptiveLimit:
    """The limit of requests in flight (see the module). ``target`` 0: fixed at ``ceiling``."""

    ceiling: int
    target: float
    """Seconds: the median time to answer the limit aims at."""
    floor: int = attrs.field()
    limit: float = attrs.field(init=False)
    _window_end: float | None = attrs.field(init=False, default=None)
    _samples: list[float] = attrs.field(init=False, factory=list)

    @floor.default
    def _default_floor(self) -> int:
        return max(1, self.ceiling // 8)

    def __attrs_post_init__(self) -> None:
        self.floor = max(1, min(self.floor, self.ceiling))
        self.limit = float(self.ceiling)

    @property
    def adaptive(self) -> bool:
        return self.target > 0 and self.ceiling > self.floor

    def current(self, now: float) -> int:
        """The limit now (a window that has ended is judged first)."""
        if self.adaptive and self._window_end is not None and now >= self._window_end:
            self._judge(now)
        return int(self.limit)

    def answered(self, seconds: float, now: float) -> None:
        """An admitted request took ``seconds`` to answer; ``now`` is when it ended."""
        if not self.adaptive:
            return
        if self._window_end is None:
            self._window_end = now + WINDOW_SECONDS
        elif now >= self._window_end:
            self._judge(now)
        self._samples.append(seconds)

    def _judge(self, now: float) -> None:
        samples = self._samples
        if len(samples) >= BUSY_SAMPLES:
            samples.sort()
            median = samples[len(samples) // 2]
        else:
            median = 0.0  # not busy
        if median > self.target:
            factor = min(DECREASE, max(FASTEST_DECREASE, self.target / median))
            self.limit = max(float(self.floor), self.limit * factor)
        elif median < self.target / 2:
            self._raise()
        assert self._window_end is not None
        # Windows that ended since without an answer were calm ones (bounded: the
        # ceiling is reached long before).
        quiet = int((now - self._window_end) / WINDOW_SECONDS)
        for _ in range(min(quiet, 64)):
            self._raise()
        self._samples = []
        self._window_end = now + WINDOW_SECONDS

    def _raise(self) -> None:
        self.limit = min(float(self.ceiling), self.limit + max(1.0, self.limit * INCREASE))
