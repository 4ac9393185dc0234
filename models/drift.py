"""How far a population has moved from the one a model was trained on: binned profiles and the
population stability index (PSI).

A ``Profile`` holds, per column, the reference's bin edges (its deciles, ties merged) and the
share of reference rows in each bin, with one more bin for missing values. Scoring counts its
own rows into the same bins, so a scoring run can be compared with the training data without
keeping either. PSI = sum over bins of (new - ref) * ln(new / ref); the usual reading is below
0.1 stable, 0.1 to 0.25 a moderate shift, 0.25 and above a large one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# The column a profile gives the model's churn probability under.
SCORE = "churn_probability"
PSI_MODERATE = 0.1
PSI_LARGE = 0.25
BINS = 10
# Bins no reference row fell in are given this share, so PSI stays finite.
FLOOR = 1e-4


def psi_band(value: float) -> str:
    """``stable``, ``moderate`` or ``large``, by the usual 0.1 / 0.25 bands."""
    if not np.isfinite(value):
        return "-"
    return "large" if value >= PSI_LARGE else "moderate" if value >= PSI_MODERATE else "stable"


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """The PSI of ``current`` bin counts against ``reference`` ones (same bins)."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan")
    ref = np.maximum(ref / ref.sum(), FLOOR)
    cur = np.maximum(cur / cur.sum(), FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts of ``values`` in the bins cut at ``edges`` (right-closed), then missing ones."""
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    which = np.searchsorted(np.asarray(edges, dtype=float), values[~missing], side="left")
    counts = np.bincount(which, minlength=len(edges) + 1).astype(float)
    return np.append(counts, float(missing.sum()))


@dataclass
class Profile:
    """Bin edges and counts per column; ``add`` accumulates more rows into the same bins."""

    edges: dict[str, list[float]]
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    # Per column, the largest PSI of one training cutoff's rows against all of them: how far
    # the column moves from date to date anyway (a calendar-driven one, such as days since a
    # newsletter everyone gets, moves a lot). Drift is what goes beyond it.
    spread: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, frame: pd.DataFrame, columns: list[str], bins: int = BINS) -> Profile:
        """The reference profile of ``columns`` in ``frame``: decile edges and counts."""
        edges = {}
        for column in columns:
            values = frame[column].to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            cuts = (np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
                    if len(values) else np.array([]))
            edges[column] = cuts.tolist()
        profile = cls(edges)
        profile.add(frame)
        return profile

    def merged(self, other: Profile) -> Profile:
        """One profile holding the columns of both."""
        return Profile({**self.edges, **other.edges}, {**self.counts, **other.counts},
                       {**self.spread, **other.spread})

    def measure_spread(self, frame: pd.DataFrame, by: str) -> Profile:
        """Set ``spread`` from the groups of ``frame[by]`` (the rows this profile counted)."""
        for _, part in frame.groupby(by):
            one = self.empty()
            one.add(part)
            for column, value in one.psi(self).items():
                self.spread[column] = max(self.spread.get(column, 0.0), float(value))
        return self

    def empty(self) -> Profile:
        """The same bins, no rows: for counting a new population."""
        return Profile(self.edges)

    def add(self, frame: pd.DataFrame) -> None:
        for column, cuts in self.edges.items():
            if column not in frame:
                continue
            counts = bin_counts(frame[column].to_numpy(dtype=float), cuts)
            previous = self.counts.get(column)
            self.counts[column] = counts if previous is None else previous + counts

    def rows(self) -> int:
        return int(next(iter(self.counts.values())).sum()) if self.counts else 0

    def psi(self, reference: Profile) -> pd.Series:
        """PSI of each column against ``reference`` (the same bins), largest first."""
        out = {c: psi(reference.counts[c], counts) for c, counts in self.counts.items()
               if c in reference.counts and len(reference.counts[c]) == len(counts)}
        return pd.Series(out, dtype=float).sort_values(ascending=False)

    def to_dict(self) -> dict[str, dict[str, object]]:
        return {c: {"edges": self.edges[c], "counts": self.counts.get(
            c, np.zeros(len(self.edges[c]) + 2)).tolist(), "spread": self.spread.get(c)}
            for c in self.edges}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, object]] | None) -> Profile | None:
        if not data:
            return None
        return cls({c: d["edges"] for c, d in data.items()},
                   {c: np.asarray(d["counts"], dtype=float) for c, d in data.items()},
                   {c: float(d["spread"]) for c, d in data.items()
                    if d.get("spread") is not None})
