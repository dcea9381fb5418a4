"""AFLoRA's cubic freezing threshold: a pure function of (step, t_i, t_f, total)."""

from __future__ import annotations

import pytest

from fairlora.regularizers.schedules import cubic_threshold


def test_threshold_is_one_during_warmup_and_zero_in_the_final_phase():
    assert [cubic_threshold(s, 10, 30, 100) for s in (0, 5, 10)] == [1.0, 1.0, 1.0]
    assert [cubic_threshold(s, 10, 30, 100) for s in (70, 80, 100, 150)] == [0.0, 0.0, 0.0, 0.0]


def test_threshold_follows_the_cubic_between_the_phases():
    # (1 - (t - t_i) / (T - t_i - t_f))^3 with t_i = 10, t_f = 30, T = 100: 60 steps of decay
    assert cubic_threshold(40, 10, 30, 100) == pytest.approx(0.5**3)
    assert cubic_threshold(25, 10, 30, 100) == pytest.approx(0.75**3)
    assert cubic_threshold(11, 10, 30, 100) == pytest.approx((59 / 60) ** 3)
    values = [cubic_threshold(s, 10, 30, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_threshold_without_room_to_freeze_is_an_error():
    with pytest.raises(ValueError, match="t_initial \\+ t_final < total"):
        cubic_threshold(5, 60, 40, 100)
    with pytest.raises(ValueError, match="t_initial, t_final >= 0"):
        cubic_threshold(5, -1, 40, 100)
