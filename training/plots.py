"""The figures a churn run logs (ROC, reliability, gains and lift, importance, SHAP summary)
and a backtest's metrics across origins."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from training.metrics import decile_table


def subplots(*args: object, figsize: tuple[float, float], **kwargs: object
             ) -> tuple[Figure, object]:
    """``pyplot.subplots`` without pyplot: a figure no backend or global state holds, so
    plotting works the same in a script, a server thread or a notebook (which shows it)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def roc_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """ROC curves of the model and each baseline on the same customers."""
    fig, ax = subplots(figsize=(6, 5))
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (churners found)",
           title="ROC on the test cutoff")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def reliability_figure(y: np.ndarray, probability: np.ndarray, bins: int = 10) -> Figure:
    """Predicted churn probability against the observed churn rate, with bin sizes."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "p": probability, "y": y}).groupby("bin").agg(
        predicted=("p", "mean"), observed=("y", "mean"), customers=("y", "size"))
    fig, (ax, hist) = subplots(2, 1, figsize=(6, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    ax.plot(frame.predicted, frame.observed, marker="o", label="model")
    ax.set(ylabel="observed churn rate", title="Reliability diagram (test cutoff)")
    ax.legend(loc="upper left")
    hist.hist(probability, bins=edges, color="tab:blue", alpha=0.6)
    hist.set(xlabel="predicted churn probability", ylabel="customers")
    fig.tight_layout()
    return fig


def gains_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """Cumulative share of churners found, and lift, by decile of score."""
    fig, (gains, lift) = subplots(1, 2, figsize=(11, 4.5))
    for name, score in scores.items():
        table = decile_table(y, score)
        gains.plot([0, *table.decile * 10], [0, *table.capture * 100], marker="o", label=name)
        lift.plot(table.decile, table.lift, marker="o", label=name)
    gains.plot([0, 100], [0, 100], color="grey", linestyle=":", label="random")
    gains.set(xlabel="% of customers contacted (riskiest first)", ylabel="% of churners reached",
              title="Cumulative gains")
    lift.axhline(1.0, color="grey", linestyle=":")
    lift.set(xlabel="decile (1 = riskiest)", ylabel="churn rate / average churn rate",
             title="Lift by decile", xticks=range(1, 11))
    gains.legend(loc="lower right")
    fig.tight_layout()
    return fig


def importance_figure(importance: pd.Series, top: int = 20) -> Figure:
    """The features that carry the most split gain."""
    shown = importance.sort_values(ascending=False).head(top)[::-1]
    fig, ax = subplots(figsize=(7, 0.3 * len(shown) + 1.2))
    ax.barh(shown.index, shown.to_numpy(), color="tab:blue")
    ax.set(xlabel="total gain", title=f"Feature importance (top {len(shown)})")
    fig.tight_layout()
    return fig


def shap_summary_figure(contributions: pd.DataFrame, values: pd.DataFrame, top: int = 15,
                        seed: int = 0) -> Figure:
    """SHAP beeswarm: each dot a customer, x its contribution, colour its feature value."""
    order = contributions.abs().mean().sort_values(ascending=False).head(top).index[::-1]
    rng = np.random.default_rng(seed)
    fig, ax = subplots(figsize=(8, 0.38 * len(order) + 1.5))
    for row, name in enumerate(order):
        value = values[name].to_numpy(dtype=float)
        ranks = pd.Series(value).rank(pct=True).to_numpy()
        jitter = rng.uniform(-0.3, 0.3, len(value))
        ax.scatter(contributions[name], row + jitter, c=np.nan_to_num(ranks, nan=0.5),
                   cmap="coolwarm", s=4, alpha=0.6, linewidths=0)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(order)), list(order))
    ax.set(xlabel="contribution to churn log-odds (LightGBM pred_contrib)",
           title="SHAP summary (colour: feature value, blue low, red high)")
    fig.tight_layout()
    return fig


BACKTEST_PANELS = (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"), ("ece", "ECE (lower is better)"),
                   ("top_decile_lift", "lift in the top 10%"))


def backtest_figure(per_origin: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """Each scorer's metrics at each origin of a rolling-origin backtest."""
    fig, axes = subplots(2, 2, figsize=(10, 7), sharex=True)
    for ax, (metric, title) in zip(axes.flat, BACKTEST_PANELS, strict=True):
        for scorer, part in per_origin.groupby("scorer", sort=False):
            if part[metric].notna().any():
                ax.plot(pd.to_datetime(part["origin"]), part[metric], marker="o",
                        label=labels.get(str(scorer), str(scorer)))
        ax.set(title=title)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    for ax in axes[1]:
        ax.set_xlabel("origin (test cutoff)")
        ax.tick_params(axis="x", labelrotation=30)
    fig.suptitle("Rolling-origin backtest: each origin trained only on what was known then")
    fig.tight_layout()
    return fig


def monitor_figure(checks: pd.DataFrame) -> Figure:
    """Realised ROC AUC of each matured scoring run against the model's own test ROC AUC."""
    fig, ax = subplots(figsize=(7, 4))
    when = pd.to_datetime(checks["as_of"])
    ax.plot(when, checks["roc_auc"], marker="o", label="realised ROC AUC")
    ax.plot(when, checks["test_roc_auc"], linestyle="--", color="grey",
            label="ROC AUC on the model's test cutoff")
    ax.set(xlabel="scoring as-of", ylabel="ROC AUC", title="Scores against what customers did")
    ax.legend(loc="lower left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def psi_figure(psi: pd.Series, moderate: float, large: float, top: int = 20) -> Figure:
    """Population stability index per column (largest first), with the usual bands."""
    shown = psi.dropna().sort_values(ascending=False).head(top)[::-1]
    fig, ax = subplots(figsize=(7, 0.3 * len(shown) + 1.5))
    colours = ["tab:red" if v >= large else "tab:orange" if v >= moderate else "tab:green"
               for v in shown]
    ax.barh(shown.index, shown.to_numpy(), color=colours)
    for line in (moderate, large):
        ax.axvline(line, color="grey", linestyle=":")
    ax.set(xlabel="PSI against the training data", title="Drift of the newest scoring run")
    fig.tight_layout()
    return fig
