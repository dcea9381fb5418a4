"""Weight schedules of loss terms: pure functions of (step, total steps) -> weight.

`constant(w)`, `cosine_decay(w, floor)` and `two_phase(w, start, ramp)` return such functions; the
`*_weight` functions are the formulas themselves, for tests and plots.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

Schedule = Callable[[int, int], float]


def constant_weight(step: int, total: int, value: float) -> float:
    """`value` at every step."""
    return value


def cosine_weight(step: int, total: int, value: float, floor: float) -> float:
    """Cosine decay from `value` at step 0 to `floor * value` at the last step."""
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return value * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def two_phase_weight(step: int, total: int, value: float, start: float, ramp: float) -> float:
    """0 before `start * total`, a linear ramp over `ramp * total` steps, then `value`."""
    begin, length = start * total, ramp * total
    if step < begin:
        return 0.0
    if length <= 0 or step >= begin + length:
        return value
    return value * (step - begin) / length


def constant(value: float) -> Schedule:
    """A schedule that is `value` throughout."""
    return partial(constant_weight, value=value)


def cosine_decay(value: float, floor: float = 0.1) -> Schedule:
    """A schedule decaying from `value` to `floor * value` on a half cosine."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"cosine_decay: floor must lie in [0, 1], got {floor}")
    return partial(cosine_weight, value=value, floor=floor)


def two_phase(value: float, start: float = 0.0, ramp: float = 0.0) -> Schedule:
    """A schedule that is 0 until `start` (share of training), ramps linearly over `ramp`, then stays."""
    if start < 0 or ramp < 0 or start + ramp > 1:
        raise ValueError(f"two_phase: need start, ramp >= 0 and start + ramp <= 1, got {start}, {ramp}")
    return partial(two_phase_weight, value=value, start=start, ramp=ramp)


def cubic_threshold(step: int, t_initial: int, t_final: int, total: int) -> float:
    """AFLoRA's freezing threshold: 1 until `t_initial`, a cubic decay to 0 at `total - t_final`, then 0.

    threshold = (1 - (step - t_i) / (total - t_i - t_f))^3 for t_i < step <= total - t_f.
    """
    if t_initial < 0 or t_final < 0 or t_initial + t_final >= total:
        raise ValueError(
            f"cubic_threshold: need t_initial, t_final >= 0 and t_initial + t_final < total steps, "
            f"got {t_initial} + {t_final} vs {total}"
        )
    if step <= t_initial:
        return 1.0
    if step >= total - t_final:
        return 0.0
    return (1.0 - (step - t_initial) / (total - t_initial - t_final)) ** 3
