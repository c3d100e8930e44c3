"""Statistics over seeds shared by the benchmark scripts (imported from beside them)."""

from __future__ import annotations

import numpy as np


def interquartile_mean(values: list[float]) -> float:
    """Mean of the middle half (the IQM of Agarwal et al., 2021), over seeds."""
    ordered = np.sort(np.asarray(values, np.float64))
    n = len(ordered)
    lo, hi = int(np.floor(0.25 * n)), int(np.ceil(0.75 * n))
    return float(ordered[lo:hi].mean()) if hi > lo else float(ordered.mean())
