"""Every uplift learner and the default on a suite of experiments, on the same folds.

The suite: Hillstrom (each e-mail arm against no e-mail, on spend and on conversion), the
synthetic campaign of `churn generate`, Nie and Wager's set-ups A-D from `causalml.dataset`
at 2,000, 10,000 and 50,000 rows, and three of our own: an effect linear in two features,
no effect at all, and an effect confined to 5% of customers. The causalml set-ups keep their
features, baseline b(x) and effect tau(x) and randomise the treatment (p = 0.5, as in the
experiments this project learns from): y = b + (w - 0.5) tau + noise.

Each set: 5 folds stratified by group (the same for every learner); every learner is fitted
on four folds and scores the fifth; the Qini area of each held-out fold (the area between
the Qini curve and random targeting, per treated customer, in % of the set's outcome
standard deviation; 0 = random), averaged, with its standard error over the folds. The
usual Qini coefficient divides that area by the fold's total increment, which is noise
where the average effect is near 0 (no effect, set-up D) and flips sign with it; it is
printed too, for Hillstrom and the synthetic campaign, where earlier tables used it.
The target for the default: at least the best single learner's Qini minus that learner's
standard error, and not below random (its mean plus its standard error at least 0). Also
the default's fitting time against the plain ensemble's (both fitted on the same folds).
Where the true effects are known (the simulated sets), they are scored as one more learner,
"true effect": where even they fall short of the best single learner minus its standard
error, that learner's lead is noise the target cannot ask anyone to match.

With ``--replicates R`` the protocol runs R times: each simulated set draws new data every
time and every set gets new folds. A learner's figure is then the mean over the replicates
of its mean over the folds, and its standard error the replicates' mean standard error over
the folds (one run's, as the target defines it): one run's best single learner is partly a
lucky draw of the folds, and the mean over replicates says how much.

    python bench/uplift_suite.py [--sets hillstrom synthetic nie_wager own] [--folds 5]
                                 [--replicates 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.synthetic import GenerateConfig, generate  # noqa: E402
from models.uplift_model import Effect  # noqa: E402
from training.config import BaseParams, UpliftTrainConfig  # noqa: E402
from training.train_uplift import _folds, load_experiment  # noqa: E402
from training.uplift_learners import (  # noqa: E402
    EnsembleLearner,
    make_learner,
    standardised_mean,
)
from training.uplift_metrics import UpliftMetrics, _area, qini_curve  # noqa: E402

HILLSTROM = (Path(__file__).resolve().parents[2] / "shared" / "data" / "hillstrom"
             / "hillstrom.csv")
SINGLES = EnsembleLearner.members
DEFAULT = "adaptive"
TRUTH = "true effect"
SIZES = (2_000, 10_000, 50_000)


# Each generator takes the replicate number: a simulated set draws new data for each (its own
# seed); a real experiment (Hillstrom) is what it is, and only its folds change.
Sets = Iterator[tuple[str, pd.DataFrame, np.ndarray, np.ndarray]]


def hillstrom_sets(replicate: int = 0) -> Sets:
    for outcome in ("spend", "conversion"):
        other = "conversion" if outcome == "spend" else "spend"
        cfg = UpliftTrainConfig(table=HILLSTROM, treatments=("segment=Womens E-Mail",
                                                             "segment=Mens E-Mail"),
                                control="segment=No E-Mail", outcome=outcome,
                                ignore=("visit", other))
        experiment = load_experiment(cfg)
        for arm in experiment.arms:
            part = experiment.arm(arm)
            name = f"Hillstrom {arm.removeprefix('segment=').removesuffix(' E-Mail')} {outcome}"
            yield name, part.features, part.outcome(), part.treated()


def synthetic_sets(replicate: int = 0) -> Sets:
    with tempfile.TemporaryDirectory(prefix="churn-uplift-suite-") as tmp:
        generate(GenerateConfig(customers=20_000, seed=7 + replicate), Path(tmp) / "data")
        experiment = load_experiment(UpliftTrainConfig(data=Path(tmp) / "data"))
        part = experiment.arm(experiment.arms[0])
        yield "synthetic campaign spend", part.features, part.outcome(), part.treated()


def randomised(X: np.ndarray, b: np.ndarray, tau: np.ndarray, seed: int, sigma: float = 1.0
               ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 2, len(b))
    y = b + (w - 0.5) * tau + sigma * rng.normal(size=len(b))
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]), y, w


# Where the true effect of every row is known (the simulated sets), it is kept here by set
# name, to check the default's intervals against it.
TRUE_EFFECTS: dict[str, np.ndarray] = {}


def nie_wager_sets(replicate: int = 0) -> Sets:
    from causalml.dataset import synthetic_data  # noqa: PLC0415 - the bench extra only

    for mode, setup in zip((1, 2, 3, 4), "ABCD", strict=True):
        for n in SIZES:
            # causalml draws from numpy's global state
            np.random.seed(mode * 100 + n % 97 + 1000 * replicate)
            _, X, _, tau, b, _ = synthetic_data(mode=mode, n=n, p=6, sigma=1.0)
            features, y, w = randomised(X, b, tau, seed=n + mode + 1000 * replicate)
            TRUE_EFFECTS[f"Nie-Wager {setup} n={n:,}"] = tau
            yield f"Nie-Wager {setup} n={n:,}", features, y, w


def own_sets(replicate: int = 0, n: int = 20_000) -> Sets:
    rng = np.random.default_rng(11 + 1000 * replicate)
    X = rng.normal(size=(n, 6))
    baseline = 2 * np.sin(X[:, 2]) + X[:, 3] ** 2 + X[:, 4]
    effects = {"linear effect": 1.0 + 0.5 * X[:, 0] + 0.3 * X[:, 1],
               "no effect": np.zeros(n),
               "effect in 5% only": np.where(X[:, 0] > 1.645, 2.0, 0.0)}
    for seed, (name, tau) in enumerate(effects.items()):
        features, y, w = randomised(X, baseline, tau, seed=seed + 1000 * replicate)
        TRUE_EFFECTS[f"{name} n={n:,}"] = tau
        yield f"{name} n={n:,}", features, y, w


SETS = {"hillstrom": hillstrom_sets, "synthetic": synthetic_sets,
        "nie_wager": nie_wager_sets, "own": own_sets}


def qini_area(y: np.ndarray, t: np.ndarray, score: np.ndarray, scale: float) -> float:
    """Area between the Qini curve and random targeting, per treated customer, in % of
    ``scale`` (the set's outcome standard deviation)."""
    curve = qini_curve(y, t, score)
    total = float(curve["incremental"].iloc[-1])
    area = _area(curve["fraction"].to_numpy(), curve["incremental"].to_numpy()) - total / 2
    return 100.0 * area / (float(np.sum(t)) * scale)


def interval_checks(learner, estimate: np.ndarray, tau: np.ndarray) -> list[tuple[bool, float]]:
    """Per group of held-out customers the default's intervals put together: whether the
    interval holds their true average effect, and its width."""
    bounds = Effect(learner.terms_, intervals=learner.intervals_).interval(estimate)
    checks = []
    for low in np.unique(bounds["spend_low"]):
        rows = bounds["spend_low"] == low
        high = float(bounds["spend_high"][rows][0])
        checks.append((bool(low <= tau[rows].mean() <= high), high - float(low)))
    return checks


def fold_qini(X: pd.DataFrame, y: np.ndarray, t: np.ndarray, folds: int, extra: list[str],
              params: BaseParams, tau: np.ndarray | None = None, seed: int = 0
              ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float],
                         list[tuple[bool, float]]]:
    """Per learner, the Qini of each held-out fold; seconds spent fitting the plain
    ensemble (its six members) and each extra learner; and, where the true effects ``tau``
    are known, the default's interval checks (see ``interval_checks``). ``seed`` draws
    the folds."""
    checks: list[tuple[bool, float]] = []
    qini: dict[str, list[float]] = {}
    coefficient: dict[str, list[float]] = {}
    spread = float(np.std(y))
    seconds = dict.fromkeys(["ensemble", *extra], 0.0)
    for fit, held in _folds(t, folds, seed):
        X_fit, X_held = X.iloc[fit], X.iloc[held]
        estimates, fitted = {}, {}
        started = time.perf_counter()
        for name in SINGLES:
            try:
                learner = make_learner(name, params).fit(X_fit, y[fit], t[fit])
            except ValueError:  # a two-part model on an outcome with no zeros
                continue
            estimates[name] = learner.predict(X_held)
            fitted[name] = learner.predict(X_fit)
        seconds["ensemble"] += time.perf_counter() - started
        scale, constant = standardised_mean(list(fitted.values()))
        estimates["ensemble"] = np.asarray(scale) @ np.asarray(list(estimates.values())) \
            + constant
        for name in extra:
            started = time.perf_counter()
            learner = make_learner(name, params).fit(X_fit, y[fit], t[fit])
            seconds[name] += time.perf_counter() - started
            estimates[name] = learner.predict(X_held)
            if name == DEFAULT and tau is not None:
                checks += interval_checks(learner, estimates[name], tau[held])
        if tau is not None:  # the true effects as the score: the best any learner can do
            estimates[TRUTH] = tau[held]
        for name, estimate in estimates.items():
            qini.setdefault(name, []).append(qini_area(y[held], t[held], estimate, spread))
            coefficient.setdefault(name, []).append(
                UpliftMetrics.of(y[held], t[held], estimate).qini)
    return qini, coefficient, seconds, checks


Run = tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float],
            list[tuple[bool, float]]]


def target(mean: dict[str, float], error: dict[str, float]) -> tuple[str, float, bool, bool]:
    """The best single learner, the floor it sets (its Qini minus its standard error), and
    whether the default meets that floor and is not below random."""
    best = max((k for k in SINGLES if k in mean), key=lambda k: mean[k])
    floor = mean[best] - error[best]
    return best, floor, mean[DEFAULT] >= floor, mean[DEFAULT] + error[DEFAULT] >= 0


def fold_figures(qini: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Each learner's mean Qini over one run's folds and its standard error."""
    return ({k: float(np.mean(v)) for k, v in qini.items()},
            {k: float(np.std(v, ddof=1) / np.sqrt(len(v))) for k, v in qini.items()})


def summarise(name: str, runs: list[Run]) -> dict:
    """One set's row over its replicates: each learner's Qini is the mean over the
    replicates of its mean over the folds, and its standard error the replicates' mean
    standard error over the folds (one run's, as the target defines it, estimated on
    every replicate); the target is judged on these, and on each replicate alone."""
    figures = [fold_figures(qini) for qini, *_ in runs]
    # A learner that failed on some replicate (a part with no buyers in an arm, say) is
    # left out of the row rather than averaged over fewer replicates than the rest.
    kept = [k for k in figures[0][0] if all(k in m for m, _ in figures)]
    if dropped := sorted({k for m, _ in figures for k in m} - set(kept)):
        print(f"  {name}: left out, not fitted on every replicate: {', '.join(dropped)}")
    mean = {k: float(np.mean([m[k] for m, _ in figures])) for k in kept}
    error = {k: float(np.mean([e[k] for _, e in figures])) for k in kept}
    classic = {k: float(np.mean([np.mean(c[k]) for _, c, *_ in runs])) for k in kept}
    seconds = {k: sum(r[2][k] for r in runs) for k in runs[0][2]}
    checks = [check for *_, run_checks in runs for check in run_checks]
    best, floor, meets, not_below = target(mean, error)
    singles = [k for k in SINGLES if k in mean]
    return {"set": name, "best single": best, "best": mean[best], "best se": error[best],
            "truth": mean.get(TRUTH, np.nan),
            "truth meets best - se": mean.get(TRUTH, np.inf) >= floor,
            "ensemble": mean["ensemble"], "default": mean[DEFAULT],
            "default se": error[DEFAULT],
            "meets best - se": meets, "not below random": not_below,
            "replicates": len(runs),
            "replicates meeting": sum(all(target(*f)[2:]) for f in figures),
            "cost vs ensemble": seconds[DEFAULT] / seconds["ensemble"],
            "coefficient default": classic[DEFAULT], "coefficient ensemble": classic["ensemble"],
            "coefficient best single": max(classic[k] for k in singles),
            "intervals checked": len(checks),
            "intervals holding": sum(held for held, _ in checks),
            "interval width": float(np.mean([w for _, w in checks])) if checks else np.nan,
            **{f"qini {k}": v for k, v in mean.items()},
            **{f"se {k}": v for k, v in error.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--also", nargs="*", default=[],
                        help="other learners to fit beside the default (e.g. "
                             "ensemble_or_distilled)")
    parser.add_argument("--replicates", type=int, default=1,
                        help="run the protocol this many times: new data for each simulated "
                             "set, new folds for every set; a set's figures are the means "
                             "over the replicates")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as CSV")
    args = parser.parse_args()
    started = time.time()
    params = BaseParams(threads=os.cpu_count() or 1)
    runs: dict[str, list[Run]] = {}
    for replicate in range(args.replicates):
        for group in args.sets:
            for name, X, y, t in SETS[group](replicate):
                runs.setdefault(name, []).append(fold_qini(
                    X, y, t, args.folds, [DEFAULT, *args.also], params,
                    TRUE_EFFECTS.get(name), seed=replicate))
                row = summarise(name, runs[name][-1:])
                print(f"[{time.time() - started:5.0f} s] {name} ({len(y):,} rows, replicate "
                      f"{replicate}): default {row['default']:.3f} ± {row['default se']:.3f}, "
                      f"best single {row['best single']} {row['best']:.3f} ± "
                      f"{row['best se']:.3f}, ensemble {row['ensemble']:.3f}; cost "
                      f"{row['cost vs ensemble']:.2f}x", flush=True)
    rows = [summarise(name, set_runs) for name, set_runs in runs.items()]
    frame = pd.DataFrame(rows)
    if args.out:
        frame.to_csv(args.out, index=False)
    print(f"\n# Uplift suite, {date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, lightgbm {lgb.__version__}, {args.folds} "
          f"folds, {args.replicates} replicate(s), {time.time() - started:.0f} s\n")
    print("| set | best single (Qini ± se) | ensemble | default (Qini ± se) | >= best - se | "
          "not below random | replicates meeting both | default's fit / ensemble's | "
          "the true effects as the score |")
    print("|---|---|---:|---:|---|---|---:|---:|---:|")
    for r in rows:
        truth = "" if np.isnan(r["truth"]) else (
            f"{r['truth']:.3f}{'' if r['truth meets best - se'] else ' (misses too)'}")
        print(f"| {r['set']} | {r['best single']} {r['best']:.3f} ± {r['best se']:.3f} | "
              f"{r['ensemble']:.3f} | {r['default']:.3f} ± {r['default se']:.3f} | "
              f"{'yes' if r['meets best - se'] else 'NO'} | "
              f"{'yes' if r['not below random'] else 'NO'} | "
              f"{r['replicates meeting']} of {r['replicates']} | "
              f"{r['cost vs ensemble']:.2f}x | {truth} |")
    learners = [c.removeprefix("qini ") for c in frame.columns if c.startswith("qini ")]
    print("\nEvery learner's mean Qini over the folds:\n")
    print("| set | " + " | ".join(learners) + " |")
    print("|---|" + "---:|" * len(learners))
    for r in rows:
        print(f"| {r['set']} | " + " | ".join(f"{r.get('qini ' + k, np.nan):.3f}"
                                              for k in learners) + " |")
    print("\nQini coefficient (mean over folds) where earlier tables used it:\n")
    print("| set | best single | ensemble | default |\n|---|---:|---:|---:|")
    for r in rows:
        if r["set"].startswith(("Hillstrom", "synthetic")):
            print(f"| {r['set']} | {r['coefficient best single']:.3f} | "
                  f"{r['coefficient ensemble']:.3f} | {r['coefficient default']:.3f} |")
    print("\nThe default's 95% intervals against the true average effect of each group of "
          "held-out customers they put together (simulated sets):\n")
    print("| set | groups | holding | share | mean width | spread of true effects |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["intervals checked"]:
            print(f"| {r['set']} | {r['intervals checked']} | {r['intervals holding']} | "
                  f"{r['intervals holding'] / r['intervals checked']:.0%} | "
                  f"{r['interval width']:.3f} | {np.std(TRUE_EFFECTS[r['set']]):.3f} |")
    checked = frame["intervals checked"].sum()
    print(f"\nIntervals holding the true group effect: {frame['intervals holding'].sum()} of "
          f"{checked} ({frame['intervals holding'].sum() / max(checked, 1):.0%}).")
    print(f"\nTarget met on {int((frame['meets best - se'] & frame['not below random']).sum())}"
          f" of {len(frame)} sets; default's fitting time {frame['cost vs ensemble'].median():.2f}x"
          f" the ensemble's (median over sets). The true effects as the score miss the first "
          f"part of the target on {int((~frame['truth meets best - se']).sum())} sets.")


if __name__ == "__main__":
    main()
