"""Warm-up then cosine annealing with warm restarts."""

from __future__ import annotations

import pytest

from gcmr.train.schedule import lr_at


def test_warmup_then_cosine() -> None:
    kw = dict(peak=1.0, floor=0.0, warmup_steps=10, total_steps=110)
    lrs = [lr_at(s, **kw) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))  # rising during warm-up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # falling afterwards
    assert lrs[60] == pytest.approx(0.5)
    assert lrs[-1] < 0.01


def test_restarts_grow() -> None:
    kw = dict(peak=1.0, floor=0.1, warmup_steps=0, total_steps=1000, restart_steps=10,
              restart_mult=2.0)
    assert lr_at(0, **kw) == pytest.approx(1.0)
    assert lr_at(9, **kw) < 0.2
    assert lr_at(10, **kw) == pytest.approx(1.0)  # first restart
    assert lr_at(30, **kw) == pytest.approx(1.0)  # second period is 20 steps long
    assert lr_at(20, **kw) == pytest.approx(0.55)  # middle of the second period
