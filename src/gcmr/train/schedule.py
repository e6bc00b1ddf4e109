"""Learning-rate schedule: linear warm-up, then cosine annealing with warm restarts (SGDR).

CART appendix C warms the learning rate up over the first epochs and then anneals it with
cosine restarts. The schedule is a pure function of the step, so resuming needs no state.
"""

from __future__ import annotations

import math


def lr_at(
    step: int,
    *,
    peak: float,
    floor: float,
    warmup_steps: int,
    total_steps: int,
    restart_steps: int = 0,
    restart_mult: float = 2.0,
) -> float:
    """Learning rate at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    t = step - warmup_steps
    span = max(1, total_steps - warmup_steps)
    period = restart_steps if restart_steps > 0 else span
    # find the position inside the current restart period (periods grow by restart_mult)
    while t >= period and restart_steps > 0:
        t -= period
        period = max(1, int(round(period * restart_mult)))
    frac = min(1.0, t / period)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * frac))
