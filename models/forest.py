"""A compiled evaluator for LightGBM tree ensembles: the same margins as ``Booster.predict``,
several times faster on the row counts the service sees.

``Booster.predict(raw_score=True)`` walks one row through one tree at a time, and each step
waits on the memory load that the one before it chose. Here the trees are flattened into two
arrays (a packed word and a threshold per node) and six rows walk the forest side by side
without branches, so the processor overlaps their loads. Each row still adds its trees' leaf
values in LightGBM's order, so the margins are the same numbers, not approximations; the
champion loader checks that on the model's own validation rows before it uses one.

Supported: single-output models with numerical splits whose missing values are ``None``
(NaN reads as 0 at that split, as in LightGBM) or ``NaN`` (NaN goes the way the split
learned). Anything else (categorical
splits, ``zero_as_missing``, linear trees, multiclass) raises ``UnsupportedModel``, and the
caller keeps the Booster.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.errors import ChurnError
from models import forest_native as native

# LightGBM reads |x| <= 1e-35f (kZeroThreshold, a float) as exactly zero.
ZERO_THRESHOLD = float(np.float32(1e-35))
FEATURE_BITS = 16
NAN_GOES_RIGHT = 1 << FEATURE_BITS
IS_LEAF = 1 << (FEATURE_BITS + 1)
LEFT_IS_LEAF = FEATURE_BITS + 2  # the bit saying so; the right child's is the next one
CHILD_SHIFT = FEATURE_BITS + 4
LANES = 6
ROWS_PER_THREAD = 256
PIECES_PER_THREAD = 4
CPUS = os.cpu_count() or 1
LOG = logging.getLogger(__name__)


class UnsupportedModel(ChurnError, ValueError):
    """The model uses a LightGBM feature this evaluator does not implement."""


@dataclass(frozen=True)
class CompiledForest:
    """A LightGBM model's trees as flat arrays, evaluated by ``margins``."""

    n_features: int
    roots: np.ndarray       # first node of each tree, then ``done`` twice
    words: np.ndarray       # feature | NaN-goes-right | leaf | children leaves | first child
    thresholds: np.ndarray  # split threshold (leaves: +inf, never read)
    values: np.ndarray      # leaf value (splits: 0)
    done: int
    native: native.NativeSlot = field(default_factory=native.NativeSlot, compare=False,
                                      repr=False)

    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> CompiledForest:
        """Flatten ``booster`` (its best iteration, as ``predict`` uses by default)."""
        dump = booster.dump_model()
        if dump.get("num_tree_per_iteration", 1) != 1:
            raise UnsupportedModel("more than one tree per iteration (multiclass)")
        n_features = dump["max_feature_idx"] + 1
        if n_features >= 1 << FEATURE_BITS:
            raise UnsupportedModel(f"{n_features} features; at most {(1 << FEATURE_BITS) - 1}")
        nodes = _Nodes()
        roots = [nodes.add_tree(info["tree_structure"], cuts)
                 for info, cuts in zip(dump["tree_info"], _thresholds(booster), strict=True)]
        done = nodes.add_done()
        roots += [done, done]  # after the last tree, and where a finished row waits
        return cls(n_features, np.asarray(roots, dtype=np.int64),
                   np.asarray(nodes.words, dtype=np.int64),
                   np.asarray(nodes.thresholds, dtype=np.float64),
                   np.asarray(nodes.values, dtype=np.float64), done)

    @property
    def trees(self) -> int:
        return len(self.roots) - 2

    def margins(self, matrix: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Raw scores (``Booster.predict(..., raw_score=True)``) of a 2-D float matrix."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"need a 2-D matrix with {self.n_features} columns, "
                             f"got shape {matrix.shape}")
        flat = inputs(matrix, threads)
        out = np.empty(len(matrix))
        p = self.n_features
        walk = self._walk_for(len(matrix))
        in_blocks(len(matrix), threads, lambda part: walk(
            flat[part.start * p:part.stop * p], out[part]))
        return out

    def build_native(self) -> bool:
        """Build (or load from the cache) this forest's machine code now and use it from
        here on; False, with the reason logged, where that cannot be done."""
        slot = self.native
        with slot.lock:
            slot.looked = True  # the probe rows below must walk, not come back here
            if slot.function is None and not slot.failed:
                try:
                    function = native.load(native.library(self))
                    rows = self.probe_rows()
                    walked = self.margins(rows)
                    built = np.empty(len(rows))
                    native.call(function, _flatten(rows, 1), len(rows), self.n_features, built)
                    if not np.array_equal(built, walked):
                        raise UnsupportedModel("machine code's margins differ on probe rows")
                    slot.function = function
                except (OSError, subprocess.SubprocessError, UnsupportedModel) as err:
                    slot.failed = True
                    LOG.warning("forest of %d trees stays on the array walk: %s",
                                self.trees, getattr(err, "stderr", None) or err)
        return slot.function is not None

    def _walk_for(self, rows: int) -> Callable[[np.ndarray, np.ndarray], object]:
        """The machine code where it is built (or, on the first call, in the cache already);
        else the array walk, starting the build in the background once the forest has
        walked enough rows (in any number of calls: a batch job's chunks, a Spark worker's
        Arrow batches, a service's requests) that the rest are likely to repay it."""
        slot = self.native
        if slot.function is not None:
            function, p = slot.function, self.n_features
            return lambda flat, out: native.call(function, flat, len(out), p, out)
        if not slot.looked:
            slot.looked = True  # once per forest: a hash of its nodes and a file lookup
            if native.allowed() and native.cached(self) and self.build_native():
                return self._walk_for(rows)
        slot.rows += rows
        if not slot.checked and slot.rows >= native.min_rows():
            slot.checked = True  # looking for a compiler once, not on every later call
            if native.enabled():
                slot.started = True
                threading.Thread(target=self.build_native, name="forest-build",
                                 daemon=True).start()
        return self._margins_of

    def probe_rows(self, rows: int = 2000, seed: int = 0) -> np.ndarray:
        """Rows that take every kind of turn: each value is one of its feature's split
        thresholds, the float just above one, 0, a tiny value LightGBM reads as 0, or NaN."""
        internal = (self.words[: self.done] & IS_LEAF) == 0
        features = self.words[: self.done][internal] & 0xFFFF
        cuts = self.thresholds[: self.done][internal]
        rng = np.random.default_rng(seed)
        out = np.empty((rows, self.n_features))
        for j in range(self.n_features):
            own = cuts[features == j]
            candidates = np.concatenate([own, np.nextafter(own, np.inf),
                                         [0.0, 1e-36, -1e-36, np.nan]])
            out[:, j] = rng.choice(candidates, size=rows)
        return out

    def check_against(self, booster: lgb.Booster) -> None:
        """Raise ``UnsupportedModel`` unless the margins equal the booster's on probe rows."""
        rows = self.probe_rows()
        expected = booster.predict(rows, raw_score=True)
        got = self.margins(rows)
        if not np.array_equal(got, expected):
            worst = float(np.nanmax(np.abs(got - expected)))
            raise UnsupportedModel(f"margins differ from LightGBM's on probe rows "
                                   f"(largest difference {worst:.3g})")

    def _margins_of(self, flat: np.ndarray, out: np.ndarray) -> np.ndarray:
        from models import forest_kernels as kernels  # noqa: PLC0415 (numba, when first used)

        return kernels.margins(flat, self.n_features, self.roots, self.words, self.thresholds,
                               self.values, self.done, out)


def tree_evaluator(evaluator: Callable | None) -> str:
    """What scores a churn model whose ``evaluator`` is this (None: its Booster)."""
    forest = getattr(evaluator, "__self__", None)
    if not isinstance(forest, CompiledForest):
        return "lightgbm"
    return "compiled forest, machine code" if forest.native.function else "compiled forest"


def inputs(matrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """``matrix``'s rows, flattened, as LightGBM's predict reads them: values within
    ±1e-35 are 0 (NaN stays NaN; each split decides where it goes). Inside
    ``shared_inputs`` a matrix is flattened once for every forest that evaluates it."""
    return _shared(matrix, lambda: _flatten(matrix, threads))


def _flatten(matrix: np.ndarray, threads: int | None) -> np.ndarray:
    from models import forest_kernels as kernels  # noqa: PLC0415 (numba, when first used)

    flat = np.empty(matrix.size)
    p = matrix.shape[1]
    in_blocks(len(matrix), threads, lambda part: kernels.lightgbm_inputs(
        matrix[part], flat[part.start * p:part.stop * p]))
    return flat


_scope = threading.local()


@contextlib.contextmanager
def shared_inputs() -> Iterator[None]:
    """Within the block (one thread's), a matrix or frame that several forests evaluate
    is converted and flattened once: a scoring chunk passes the same rows to a dozen
    boosters. The rows must not change inside the block."""
    outer = getattr(_scope, "cache", None)
    _scope.cache = {} if outer is None else outer
    try:
        yield
    finally:
        _scope.cache = outer


def _shared(source: object, make: Callable[[], np.ndarray]) -> np.ndarray:
    """``make()``, made once per ``source`` object inside ``shared_inputs``."""
    cache = getattr(_scope, "cache", None)
    if cache is None:
        return make()
    # The source is held with its result, so its id cannot pass to another object.
    held = cache.get(id(source))
    if held is None or held[0] is not source:
        held = cache[id(source)] = (source, make())
    return held[1]


class _Nodes:
    """Builds the node arrays; a split's two children always sit side by side."""

    def __init__(self) -> None:
        self.words: list[int] = []
        self.thresholds: list[float] = []
        self.values: list[float] = []

    def _slots(self, count: int) -> int:
        first = len(self.words)
        self.words.extend([0] * count)
        self.thresholds.extend([np.inf] * count)
        self.values.extend([0.0] * count)
        return first

    def add_tree(self, root: dict, cuts: np.ndarray) -> int:
        """The tree's nodes; returns its root, always a split: a row takes one step per
        split and adds the leaf it lands on in the same step (a one-leaf tree becomes a
        split whose two children are that leaf)."""
        if "split_index" not in root:
            root = {"split_index": None, "decision_type": "<=", "missing_type": "None",
                    "split_feature": 0, "left_child": root, "right_child": root}
        start = self._slots(1)
        pending = [(root, start)]
        while pending:
            node, slot = pending.pop()
            if "leaf_coeff" in node:
                raise UnsupportedModel("linear trees")
            if "split_index" not in node:
                self.words[slot] = IS_LEAF
                self.values[slot] = node["leaf_value"]
                continue
            if node["decision_type"] != "<=":
                raise UnsupportedModel("categorical splits")
            if node["missing_type"] not in ("None", "NaN"):
                raise UnsupportedModel(f"missing_type {node['missing_type']}")
            left = self._slots(2)
            feature = node["split_feature"]
            threshold = np.inf if node["split_index"] is None else cuts[node["split_index"]]
            # LightGBM: NaN goes the learned way where the split learned one; elsewhere it
            # reads as 0, so it goes right when 0 > threshold.
            nan_right = (not node["default_left"] if node["missing_type"] == "NaN"
                         else threshold < 0.0)
            leaves = sum(1 << (LEFT_IS_LEAF + k) for k, child in
                         enumerate((node["left_child"], node["right_child"]))
                         if "split_index" not in child)
            self.words[slot] = ((left << CHILD_SHIFT) | leaves | (NAN_GOES_RIGHT * nan_right)
                                | feature)
            self.thresholds[slot] = threshold
            pending += [(node["left_child"], left), (node["right_child"], left + 1)]
        return start

    def add_done(self) -> int:
        """Two nodes that lead back to the first and add nothing: where a row rests after
        its last tree while the other lanes finish."""
        done = self._slots(2)
        self.words[done:] = [done << CHILD_SHIFT] * 2
        return done


def _thresholds(booster: lgb.Booster) -> list[np.ndarray]:
    """Each tree's split thresholds as the model text holds them. The JSON dump writes an
    infinite threshold as 1e300, which would send values above 1e300 the other way."""
    return [np.array(line.removeprefix("threshold=").split(), dtype=np.float64)
            if line != "threshold=" else np.empty(0)
            for line in booster.model_to_string().splitlines()
            if line.startswith("threshold=")]


def row_blocks(rows: int, threads: int) -> list[slice]:
    """Contiguous slices of ``rows`` for ``threads`` threads to share: a few for each, so
    that one thread slowed by other work (the job reading or writing a chunk) does not hold
    the rest up; one for one thread, and none under ROWS_PER_THREAD rows."""
    pieces = 1 if threads <= 1 else threads * PIECES_PER_THREAD
    count = max(1, min(pieces, rows // ROWS_PER_THREAD))
    bounds = np.linspace(0, rows, count + 1).astype(int)
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def in_blocks(rows: int, threads: int | None, work: Callable[[slice], object]) -> None:
    """``work`` on each of ``row_blocks`` of ``rows``: on the shared threads where there
    are several, in the caller's thread where there is one (a request's few rows pay no
    hand-off)."""
    parts = row_blocks(rows, threads or CPUS)
    if len(parts) == 1:
        work(parts[0])
        return
    list(thread_pool().map(work, parts))


@functools.cache
def thread_pool() -> ThreadPoolExecutor:
    """One thread per core, shared by every evaluation in the process."""
    return ThreadPoolExecutor(CPUS, thread_name_prefix="forest")


def _link(objective: str) -> str | None:
    """How ``Booster.predict`` turns margins into predictions for ``objective``:
    "identity", "exp", "sigmoid:<scale>", or None where it is not known here."""
    name, *params = objective.split()
    if name in IDENTITY_OBJECTIVES:
        return "identity"
    if name in LOG_LINK_OBJECTIVES:
        return "exp"
    if name == "binary":
        return f"sigmoid:{float(dict(p.split(':') for p in params).get('sigmoid', 1.0))!r}"
    return None


_EXP = np.frompyfunc(math.exp, 1, 1)  # the C library's exp, as LightGBM's


def _apply_link(link: str, margins: np.ndarray) -> np.ndarray:
    """LightGBM's own formulas, through the C library's exp as LightGBM's."""
    if link == "identity":
        return margins
    exp = _EXP
    if link == "exp":
        return np.asarray(exp(margins), dtype=np.float64)
    scale = float(link.split(":")[1])
    return np.asarray(1.0 / (1.0 + exp(-scale * margins)), dtype=np.float64)


IDENTITY_OBJECTIVES = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}
LOG_LINK_OBJECTIVES = {"poisson", "tweedie", "gamma"}


class CompiledBooster:
    """A booster whose plain ``predict`` (no keyword) runs on a ``CompiledForest``, with the
    objective's link: the same numbers, checked on probe rows when built. Anything else
    (keywords, inputs of other columns) goes to the booster itself. Pickles (Spark ships it
    to executors) as its booster, forest and link."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.forest = CompiledForest.from_booster(booster)
        objective = booster.dump_model().get("objective", "")
        link = _link(objective)
        if link is None:
            raise UnsupportedModel(f"objective {objective!r}")
        self.link = link
        self.names = booster.feature_name()
        rows = self.forest.probe_rows()
        if not np.array_equal(self.predict(rows), booster.predict(rows), equal_nan=True):
            raise UnsupportedModel("predictions differ from LightGBM's on probe rows")

    def predict(self, X: object, **kwargs: object) -> np.ndarray:
        if kwargs or (isinstance(X, pd.DataFrame) and (
                list(X.columns) != self.names
                or not all(pd.api.types.is_numeric_dtype(t) for t in X.dtypes))):
            return self.booster.predict(X, **kwargs)
        matrix = (_shared(X, lambda: X.to_numpy(dtype=np.float64))
                  if isinstance(X, pd.DataFrame) else X)
        return _apply_link(self.link, self.forest.margins(matrix))

    def __getattr__(self, name: str) -> object:
        # Only reached for what this class lacks; never before __init__ (e.g. unpickling).
        if name.startswith("__") or "booster" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.booster, name)


def compiled(booster: lgb.Booster) -> lgb.Booster | CompiledBooster:
    """``booster`` on a compiled forest where that gives LightGBM's numbers, else itself."""
    try:
        return CompiledBooster(booster)
    except UnsupportedModel:
        return booster
