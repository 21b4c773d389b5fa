"""The Pareto front of quality against energy: the versions no other version beats on both."""

from __future__ import annotations

import math

import numpy as np


def pareto_front(quality: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates (higher quality, lower energy).

    A point is dominated when another is at least as good on both axes and strictly
    better on one; equal points are all on the front. O(n log n).
    """
    quality = np.asarray(quality, dtype=float)
    energy = np.asarray(energy, dtype=float)
    n = len(quality)
    front = np.zeros(n, dtype=bool)
    order = np.lexsort((-quality, energy))  # energy ascending, then quality descending
    best_before = -math.inf  # best quality among strictly lower energies
    i = 0
    while i < n:
        j = i
        while j < n and energy[order[j]] == energy[order[i]]:
            j += 1
        group = order[i:j]
        top = quality[group[0]]
        if top > best_before:
            front[group[quality[group] == top]] = True
        best_before = max(best_before, top)
        i = j
    return front
