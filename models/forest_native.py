"""A ``CompiledForest`` as machine code: each tree becomes a C function, built by the
machine's C compiler into a shared library and called through ``ctypes``.

A tree walked as data waits at every split on the load that chose it. A large tree compiled
to nested ``if``s lets the processor predict the way and run ahead; a small one (at most
``BITS_MAX_LEAVES`` leaves) tests every split without a branch and picks its leaf from the
bits the tests leave. On the nightly job's champions that is 2.7x the walk. The code is
generated from the forest's own node arrays, so it takes the same turns (NaN where each
split learned, thresholds and leaf values written to the last bit), and each row adds its
trees' values in LightGBM's order: the same margins, checked against the array walk on the
forest's probe rows before a library is used.

Building costs the compiler some seconds per thousand trees, so a forest is built only for
batch work (once it has walked ``$CHURN_NATIVE_MIN_ROWS`` rows, 50,000 by default), in the
background while the array walk goes on, and kept in a cache folder by the hash of its
nodes and of this generator: a forest whose library is there already (the next job, every
task of a Spark job after the first, a service after a batch job) loads it on its first
call, in milliseconds. Without a C compiler (or with ``CHURN_NATIVE_FORESTS=0``) the array
walk simply carries on.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.forest import CompiledForest

LOG = logging.getLogger(__name__)

NATIVE_MIN_ROWS = 50_000
BITS_MAX_LEAVES = 8     # trees this small are evaluated without branches
TREES_PER_BLOCK = 32    # trees a row block walks before the next block (instruction cache)
ROWS_PER_BLOCK = 256    # rows kept in the data cache while a block of trees walks them
FLAGS = ("-O2", "-fPIC", "-shared", "-fno-fast-math")
ENTRY = "forest_margins"


class NativeSlot:
    """Where a forest keeps its built library; empty again when pickled (a Spark worker
    loads or builds its own)."""

    def __init__(self) -> None:
        self.function = None
        self.looked = False  # whether the cache was looked in for a library already built
        self.key: str | None = None  # the library's name in the cache, once hashed
        self.checked = False  # whether a build was weighed, once enough rows were walked
        self.started = False
        self.failed = False
        self.rows = 0
        self.lock = threading.Lock()

    def __reduce__(self) -> tuple:
        return (NativeSlot, ())


def min_rows() -> int:
    """Rows a forest walks before it is built: ``$CHURN_NATIVE_MIN_ROWS``, else 50,000."""
    return int(os.environ.get("CHURN_NATIVE_MIN_ROWS", NATIVE_MIN_ROWS))


def allowed() -> bool:
    """Whether machine code may be used at all (``CHURN_NATIVE_FORESTS=0`` says no)."""
    return os.environ.get("CHURN_NATIVE_FORESTS", "1") != "0"


def enabled() -> bool:
    """Whether a forest may be built here: allowed, and a compiler found."""
    return allowed() and compiler() is not None


def compiler() -> str | None:
    """The C compiler: ``$CC``, Python's own, or ``cc``/``gcc`` on the path."""
    for name in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc"):
        if name:
            found = shutil.which(name.split()[0])
            if found:
                return found
    return None


def cache_dir() -> Path:
    """``$CHURN_FOREST_CACHE``, else ``churn-forests`` in the user's cache folder."""
    explicit = os.environ.get("CHURN_FOREST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "churn-forests"


def c_source(forest: CompiledForest) -> str:
    """The forest as C: one function per tree, trees walked in blocks over rows in blocks,
    each row's total built tree by tree in LightGBM's order."""
    from models.forest import IS_LEAF  # noqa: PLC0415 (the forest module imports this one)

    trees = forest.trees
    words = forest.words.tolist()
    thresholds = forest.thresholds.tolist()
    values = forest.values.tolist()
    roots = forest.roots.tolist()
    lines = ["#include <math.h>", ""]
    for tree in range(trees):
        if _leaves(roots[tree], words, IS_LEAF) <= BITS_MAX_LEAVES:
            _emit_bits(tree, roots[tree], words, thresholds, values, IS_LEAF, lines)
            continue
        lines.append(f"static double t{tree}(const double *x) {{")
        _emit(roots[tree], words, thresholds, values, IS_LEAF, lines, 1)
        lines.append("}")
    blocks = range(0, trees, TREES_PER_BLOCK)
    for first in blocks:
        lines.append(f"static void b{first}(const double *X, long lo, long hi, long p, "
                     "double *out) {")
        lines.append("  for (long i = lo; i < hi; i++) {")
        lines.append("    const double *x = X + i * p;")
        lines.append("    double s = out[i];")
        last = min(trees, first + TREES_PER_BLOCK)
        lines.extend(f"    s += t{t}(x);" for t in range(first, last))
        lines.append("    out[i] = s;")
        lines.append("  }")
        lines.append("}")
    lines.append(f"void {ENTRY}(const double *X, long n, long p, double *out) {{")
    lines.append("  for (long i = 0; i < n; i++) out[i] = 0.0;")
    lines.append(f"  for (long lo = 0; lo < n; lo += {ROWS_PER_BLOCK}) {{")
    lines.append(f"    long hi = lo + {ROWS_PER_BLOCK} < n ? lo + {ROWS_PER_BLOCK} : n;")
    lines.extend(f"    b{first}(X, lo, hi, p, out);" for first in blocks)
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _emit(node: int, words: list, thresholds: list, values: list, is_leaf: int,
          lines: list[str], depth: int) -> None:
    """A node's code: a leaf returns its value; a split sends the row to the child its
    value chooses (NaN: right only where the split says so, as the array walk does)."""
    from models.forest import CHILD_SHIFT  # noqa: PLC0415

    pad = "  " * depth
    word = words[node]
    if word & is_leaf:
        lines.append(f"{pad}return {_literal(values[node])};")
        return
    left = word >> CHILD_SHIFT
    lines.append(f"{pad}if ({_goes_right(word, thresholds[node])}) {{")
    _emit(left + 1, words, thresholds, values, is_leaf, lines, depth + 1)
    lines.append(f"{pad}}} else {{")
    _emit(left, words, thresholds, values, is_leaf, lines, depth + 1)
    lines.append(f"{pad}}}")


def _leaves(root: int, words: list, is_leaf: int) -> int:
    from models.forest import CHILD_SHIFT  # noqa: PLC0415

    pending, count = [root], 0
    while pending:
        word = words[pending.pop()]
        if word & is_leaf:
            count += 1
        else:
            pending += [(word >> CHILD_SHIFT), (word >> CHILD_SHIFT) + 1]
    return count


def _emit_bits(tree: int, root: int, words: list, thresholds: list, values: list,
               is_leaf: int, lines: list[str]) -> None:
    """A tree of at most 64 leaves without branches: every split is tested, and each one
    the row passes to the right rules out the leaves of its left side (a bit per leaf,
    left to right); the row's leaf is the first left standing (QuickScorer's rule)."""
    from models.forest import CHILD_SHIFT  # noqa: PLC0415

    leaves: list[float] = []
    tests: list[str] = []

    def visit(node: int) -> None:
        word = words[node]
        if word & is_leaf:
            leaves.append(values[node])
            return
        first = len(leaves)
        visit(word >> CHILD_SHIFT)
        keep = ~((1 << len(leaves)) - (1 << first)) & ((1 << 64) - 1)
        goes_right = _goes_right(word, thresholds[node])
        tests.append(f"  v &= 0x{keep:016x}ULL | ((unsigned long long)({goes_right}) - 1ULL);")
        visit((word >> CHILD_SHIFT) + 1)

    visit(root)
    lines.append(f"static const double leaf{tree}[] = {{{', '.join(map(_literal, leaves))}}};")
    lines.append(f"static double t{tree}(const double *x) {{")
    lines.append("  unsigned long long v = ~0ULL;")
    lines.extend(tests)
    lines.append(f"  return leaf{tree}[__builtin_ctzll(v)];")
    lines.append("}")


def _goes_right(word: int, threshold: float) -> str:
    """The C test sending a row right at a split: value above the threshold, or NaN where
    the split sends NaN right (as the array walk decides)."""
    from models.forest import NAN_GOES_RIGHT  # noqa: PLC0415

    value, cut = f"x[{word & 0xFFFF}]", _literal(threshold)
    return f"!({value} <= {cut})" if word & NAN_GOES_RIGHT else f"{value} > {cut}"


def _literal(number: float) -> str:
    """A double as C reads it back to the same bits."""
    if np.isinf(number):
        return "INFINITY" if number > 0 else "-INFINITY"
    return repr(float(number))


@functools.lru_cache(maxsize=1)
def _generator() -> bytes:
    """This code generator and the node layout it reads, as a digest: a library built by
    another version of either is never loaded."""
    here = Path(__file__)
    return hashlib.sha256(here.read_bytes() + here.with_name("forest.py").read_bytes()).digest()


def fingerprint(forest: CompiledForest) -> str:
    """The name of the forest's library in the cache: its nodes, the code generator and the
    build settings, hashed (in milliseconds, without writing the source out)."""
    digest = hashlib.sha256(_generator())
    digest.update(repr((FLAGS, BITS_MAX_LEAVES, TREES_PER_BLOCK, ROWS_PER_BLOCK,
                        forest.n_features, forest.done)).encode())
    for array in (forest.roots, forest.words, forest.thresholds, forest.values):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]


def _target(forest: CompiledForest) -> Path:
    slot = forest.native
    if slot.key is None:  # hashed once per forest: the lookup and the build both need it
        slot.key = fingerprint(forest)
    return cache_dir() / f"forest-{slot.key}.so"


def cached(forest: CompiledForest) -> bool:
    """Whether the forest's library is in the cache already (an earlier job, or another
    task of this one, built it). A cache this user may not read is no cache."""
    try:
        return _target(forest).exists()
    except OSError:
        return False


def library(forest: CompiledForest) -> Path:
    """The forest's shared library: from the cache, or built (one build at a time in the
    folder, across processes: a second Spark worker waits and loads the first's) and put
    there."""
    target = _target(forest)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / ".lock"):
        if not target.exists():
            for stale in target.parent.glob("build-*"):  # a job that ended during its build
                shutil.rmtree(stale, ignore_errors=True)
            _build(c_source(forest), target)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(source: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent) as work:
        c_file = Path(work) / "forest.c"
        c_file.write_text(source)
        built = Path(work) / "forest.so"
        subprocess.run([compiler(), *FLAGS, str(c_file), "-o", str(built), "-lm"],
                       check=True, capture_output=True, text=True)
        os.replace(built, target)


def load(path: Path):
    """The library's entry point, called without the GIL (ctypes releases it)."""
    function = ctypes.CDLL(str(path))[ENTRY]
    function.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
    function.restype = None
    return function


def call(function, flat: np.ndarray, rows: int, n_features: int, out: np.ndarray) -> None:
    """Margins of ``rows`` flattened rows into ``out`` (both contiguous float64)."""
    function(flat.ctypes.data, rows, n_features, out.ctypes.data)
