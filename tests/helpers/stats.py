"""Independent references for the statistics tests."""

import math


def holm_brute_force(p):
    """Holm by its definition: adjusted p_(i) = max_{j <= i} min(1, (m - j) p_(j))."""
    finite = [(v, i) for i, v in enumerate(p) if not math.isnan(v)]
    finite.sort()
    m = len(finite)
    out = [math.nan] * len(p)
    for i, (_, idx) in enumerate(finite):
        out[idx] = max(min(1.0, (m - j) * finite[j][0]) for j in range(i + 1))
    return out
