"""Alternating-block timing: call order and the relative cost it reports."""

from __future__ import annotations

import numpy as np

from worldsim.timing import alternating_times, relative_cost


def test_alternating_times_runs_the_two_in_alternating_blocks():
    calls = []
    ta, tb = alternating_times(lambda: calls.append("a"), lambda: calls.append("b"), 3, 2)
    assert calls == ["a", "a", "b", "b"] * 3
    assert ta.shape == tb.shape == (3, 2) and (ta >= 0).all() and (tb >= 0).all()


def test_relative_cost_of_b_against_a():
    ta = np.array([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]) / 1000
    tb = ta * np.array([[1.5], [1.5], [1.0]])  # 50% slower in two blocks of three
    cost = relative_cost(ta, tb)
    assert cost["ms_p50_a"] == 2.0 and cost["ms_p50_b"] == 3.0
    assert cost["b_over_a"] == 0.5 and cost["b_over_a_median_of_blocks"] == 0.5
    assert cost["calls_each"] == 6
