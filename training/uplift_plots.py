"""The figures an uplift run logs: Qini curves and observed uplift by decile of score."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from training.plots import subplots
from training.uplift_metrics import qini_coefficient, qini_curve, uplift_by_decile


def qini_figure(y: np.ndarray, treated: np.ndarray, scores: dict[str, np.ndarray],
                title: str) -> Figure:
    """Incremental outcome against share of customers targeted, best-scored first."""
    fig, ax = subplots(figsize=(6, 5))
    total = 0.0
    for name, score in scores.items():
        curve = qini_curve(y, treated, score)
        total = float(curve["incremental"].iloc[-1])
        q = qini_coefficient(y, treated, score)
        ax.plot(curve["fraction"] * 100, curve["incremental"], label=f"{name} (Qini {q:.3f})")
    ax.plot([0, 100], [0, total], color="grey", linestyle=":", label="random targeting")
    ax.set(xlabel="% of customers targeted (highest uplift first)",
           ylabel="incremental outcome (treated - scaled control)", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def uplift_decile_figure(y: np.ndarray, treated: np.ndarray, score: np.ndarray,
                         title: str) -> Figure:
    """Observed treated-minus-control mean in each tenth of customers by score."""
    table = uplift_by_decile(y, treated, score)
    fig, ax = subplots(figsize=(6, 4.5))
    ax.bar(table["decile"], table["observed_uplift"], color="tab:blue")
    overall = y[treated == 1].mean() - y[treated == 0].mean()
    ax.axhline(overall, color="grey", linestyle=":", label=f"everyone ({overall:.3g})")
    ax.set(xlabel="decile of predicted uplift (1 = highest)",
           ylabel="observed uplift (treated - control mean)", title=title, xticks=range(1, 11))
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
