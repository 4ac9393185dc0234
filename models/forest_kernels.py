"""The compiled loops of ``models.forest`` (numba), in a module of their own so that importing
the forest, and the service, does not load the compiler until a forest is first evaluated."""

from __future__ import annotations

import numba
import numpy as np

from models.forest import CHILD_SHIFT, LANES, LEFT_IS_LEAF, NAN_GOES_RIGHT, ZERO_THRESHOLD


@numba.njit(inline="always")
def _step(node, row_start, total, tree, X, roots, words, thresholds, values):
    """One row takes one split; landing on a leaf it adds the leaf's value and moves to the
    next tree's root (read before the split is decided, so the two loads overlap)."""
    word = words[node]
    value = X[row_start + (word & 0xFFFF)]
    following = roots[tree + 1]
    right = np.int64((value > thresholds[node])
                     | (np.isnan(value) & ((word & NAN_GOES_RIGHT) != 0)))
    child = (word >> CHILD_SHIFT) + right
    leaf = (word >> (LEFT_IS_LEAF + right)) & 1
    total += values[child]
    tree += leaf
    return child + leaf * (following - child), total, tree


@numba.njit(nogil=True, cache=True)
def margins(X, n_features, roots, words, thresholds, values, done, out):
    """Sum of leaf values per row of the flattened matrix ``X``, six rows at a time."""
    n = X.shape[0] // n_features
    for lo in range(0, n, LANES):
        last = min(n, lo + LANES) - 1
        n0, t0, a0, s0 = roots[0], 0, 0.0, min(lo, last) * n_features
        n1, t1, a1, s1 = roots[0], 0, 0.0, min(lo + 1, last) * n_features
        n2, t2, a2, s2 = roots[0], 0, 0.0, min(lo + 2, last) * n_features
        n3, t3, a3, s3 = roots[0], 0, 0.0, min(lo + 3, last) * n_features
        n4, t4, a4, s4 = roots[0], 0, 0.0, min(lo + 4, last) * n_features
        n5, t5, a5, s5 = roots[0], 0, 0.0, min(lo + 5, last) * n_features
        while not (n0 >= done and n1 >= done and n2 >= done and n3 >= done and n4 >= done
                   and n5 >= done):
            n0, a0, t0 = _step(n0, s0, a0, t0, X, roots, words, thresholds, values)
            n1, a1, t1 = _step(n1, s1, a1, t1, X, roots, words, thresholds, values)
            n2, a2, t2 = _step(n2, s2, a2, t2, X, roots, words, thresholds, values)
            n3, a3, t3 = _step(n3, s3, a3, t3, X, roots, words, thresholds, values)
            n4, a4, t4 = _step(n4, s4, a4, t4, X, roots, words, thresholds, values)
            n5, a5, t5 = _step(n5, s5, a5, t5, X, roots, words, thresholds, values)
        for k, total in enumerate((a0, a1, a2, a3, a4, a5)):
            if lo + k <= last:
                out[lo + k] = total
    return out


@numba.njit(nogil=True, cache=True)
def lightgbm_inputs(matrix, out):
    """The rows of ``matrix`` into the flat ``out`` as LightGBM's predict reads them: values
    within ±1e-35 are 0 (NaN stays NaN: each split says where it goes)."""
    n, p = matrix.shape
    for i in range(n):
        for j in range(p):
            value = matrix[i, j]
            if -ZERO_THRESHOLD <= value <= ZERO_THRESHOLD:
                out[i * p + j] = 0.0
            else:
                out[i * p + j] = value
    return out
