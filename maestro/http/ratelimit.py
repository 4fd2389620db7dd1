"""Failed authentication attempts, limited per client address with a token bucket.

Each address may fail ``burst`` times at once, then ``per_minute`` times a minute. Only failures
spend from the bucket, and only failures (and requests without credentials) are refused once it
is empty: a valid credential always passes (``maestro.http.auth``), so one guesser cannot lock out
everyone who shares an address. In memory, per process. Which address a request comes from is
``maestro.http.forwarded``'s business (trusted proxies).

>>> clock = [0.0]
>>> limiter = FailureLimiter(burst=2, per_minute=6, clock=lambda: clock[0])
>>> limiter.failed("1.2.3.4"); limiter.failed("1.2.3.4"); limiter.retry_after("1.2.3.4")
10
>>> clock[0] = 10.0; limiter.retry_after("1.2.3.4") is None
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

_MAX_KEYS = 50_000  # addresses tracked at most; full buckets are forgotten first


class FailureLimiter:
    def __init__(self, burst: int, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, key: str, at: float) -> float:
        tokens, then = self._buckets.get(key, (self.burst, at))
        return min(self.burst, tokens + (at - then) * self.rate)

    def retry_after(self, key: str) -> int | None:
        """None when ``key`` may try; otherwise the seconds until it may."""
        if key not in self._buckets:
            return None
        tokens = self._tokens(key, self.clock())
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def failed(self, key: str) -> None:
        at = self.clock()
        self._buckets[key] = (max(0.0, self._tokens(key, at) - 1.0), at)
        if len(self._buckets) > _MAX_KEYS:
            self._forget_full(at)

    def _forget_full(self, at: float) -> None:
        for key in [k for k in self._buckets if self._tokens(k, at) >= self.burst]:
            del self._buckets[key]
        while len(self._buckets) > _MAX_KEYS:  # still full of attackers: drop the oldest
            del self._buckets[next(iter(self._buckets))]
