"""How much a method keeps: validation of ``keep`` / ``budget`` and the keep-count rules (no torch needed).

    from longvid.methods.budget import num_to_keep; num_to_keep(100, 0.25, None)   # 25
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from longvid.errors import option


def check_keep_budget(keep: float | None, budget: int | None) -> None:
    """Validate a keep ratio in (0, 1] or a positive token budget (not both)."""
    if keep is not None and budget is not None:
        raise ValueError(f"pass {option('keep')} (got {keep}) or {option('budget')} (got {budget}), not both")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, Real) or not 0.0 < keep <= 1.0):
        raise ValueError(f"{option('keep', keep)} is invalid: keep must be a ratio in (0, 1]; e.g. "
                         f"{option('keep', 0.25)} keeps a quarter")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, Integral) or budget < 1):
        raise ValueError(f"{option('budget', budget)} is invalid: budget must be a positive number of visual tokens")


def num_to_keep(total: int, keep: float | None, budget: int | None, minimum: int = 1) -> int:
    """How many of ``total`` visual tokens to keep: ``round(keep * total)`` or ``budget``, within [minimum, total]."""
    if budget is not None:
        n = budget
    elif keep is not None:
        n = math.floor(keep * total + 0.5)
    else:
        n = total
    return int(min(total, max(minimum, n)))


def num_to_keep_floor(total: int, ratio: float) -> int:
    """``max(1, int(ratio * total))``: the count the reference code of PruneVid and ReTaKe keeps (floor, >= 1)."""
    return int(min(total, max(1, int(ratio * total))))
