"""Seeds: their range, and seeding every random generator a method may use."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

#: Seeds are 32-bit: ``torch.manual_seed``, NumPy and the toolboxes take 32 bits (or wrap).
MAX_SEED = 2**32 - 1
#: More seeds than this in one run is a typo, not a plan.
MAX_SEEDS = 10_000


def is_seed(value: Any) -> bool:
    """Whether ``value`` is a valid seed: an integer (not a bool) in 0 .. :data:`MAX_SEED`."""
    return (not isinstance(value, bool) and isinstance(value, int | np.integer)
            and 0 <= value <= MAX_SEED)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (before a task runs)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
