"""BG/NBD (Fader, Hardie & Lee 2005) and Gamma-Gamma (Fader, Hardie & Lee 2005b) by maximum
likelihood: the buy-till-you-die baselines and the textbook CLV.

While alive a customer buys at a Poisson rate lambda ~ Gamma(r, alpha); after each purchase
they drop out with probability p ~ Beta(a, b). Fitted on ``x, t_x, T`` (see features/clv.py).
Gamma-Gamma: a customer's spend per purchase is Gamma(p, nu) with nu ~ Gamma(q, gamma), fitted
on the repeat buyers' mean spend per purchase day (``monetary``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from models.value_model import BGNBDParams


class BGNBD:
    """The BG/NBD model; ``fit`` learns ``r_, alpha_, a_, b_`` and ``log_likelihood_``."""

    def __init__(self, max_iter: int = 2000) -> None:
        self.max_iter = max_iter

    @staticmethod
    def _log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray,
                        big_t: np.ndarray) -> np.ndarray:
        r, alpha, a, b = params
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = betaln(a, b + x) - betaln(a, b)
        a3 = -(r + x) * np.log(alpha + big_t)
        repeat = x > 0
        a4 = np.full_like(x, -np.inf)
        a4[repeat] = (np.log(a) - np.log(b + x[repeat] - 1)
                      - (r + x[repeat]) * np.log(alpha + t_x[repeat]))
        return a1 + a2 + np.logaddexp(a3, a4)

    def fit(self, summary: pd.DataFrame) -> BGNBD:
        """Fit on a frame with columns ``x, t_x, T``."""
        histories = summary[["x", "t_x", "T"]].to_numpy(dtype=float)
        if len(histories) == 0:
            raise ValueError("BG/NBD needs at least one customer to fit")
        # Customers with the same history add the same term: each distinct one is computed
        # once, weighted by how many share it (a one-time buyer's history is their first
        # day alone, so a cohort's thousands of them are a few hundred terms).
        distinct, customers = np.unique(histories, axis=0, return_counts=True)
        x, t_x, big_t = distinct.T

        def loss(log_params: np.ndarray) -> float:
            return -customers @ self._log_likelihood(np.exp(log_params), x, t_x, big_t)

        start = np.log([1.0, max(float(histories[:, 2].mean()), 1.0), 1.0, 1.0])
        result = minimize(loss, start, method="Nelder-Mead",
                          options={"maxiter": self.max_iter, "xatol": 1e-7, "fatol": 1e-7})
        result = minimize(loss, result.x, method="L-BFGS-B")
        self.r_, self.alpha_, self.a_, self.b_ = np.exp(result.x)
        self.log_likelihood_ = -float(result.fun)
        return self

    def _odds_dead(self, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        odds = np.zeros_like(x)
        repeat = x > 0
        odds[repeat] = (a / (b + x[repeat] - 1)
                        * ((alpha + big_t[repeat]) / (alpha + t_x[repeat])) ** (r + x[repeat]))
        return odds

    def p_alive(self, summary: pd.DataFrame) -> np.ndarray:
        """P(still alive at T) for each customer."""
        x, t_x, big_t = (summary[c].to_numpy(dtype=float) for c in ("x", "t_x", "T"))
        return 1.0 / (1.0 + self._odds_dead(x, t_x, big_t))

    def params(self) -> BGNBDParams:
        return BGNBDParams(float(self.r_), float(self.alpha_), float(self.a_), float(self.b_))

    def p_any_purchase(self, summary: pd.DataFrame, t: float) -> np.ndarray:
        """P(at least one purchase in the next ``t`` time units): alive, times the chance the
        rate (Gamma(r + x, alpha + T) given the history) brings a purchase within ``t``."""
        x, big_t = (summary[c].to_numpy(dtype=float) for c in ("x", "T"))
        none = ((self.alpha_ + big_t) / (self.alpha_ + big_t + t)) ** (self.r_ + x)
        return self.p_alive(summary) * (1.0 - none)

    def expected_purchases(self, summary: pd.DataFrame, t: float) -> np.ndarray:
        """Expected number of purchases in the next ``t`` time units."""
        x, t_x, big_t = (summary[c].to_numpy(dtype=float) for c in ("x", "t_x", "T"))
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        z = t / (alpha + big_t + t)
        growth = 1.0 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyp2f1(
            r + x, b + x, a + b + x - 1, z)
        return (a + b + x - 1) / (a - 1) * growth / (1.0 + self._odds_dead(x, t_x, big_t))


class GammaGamma:
    """Gamma-Gamma spend per purchase; ``fit`` learns ``p_, q_, gamma_``."""

    def fit(self, summary: pd.DataFrame) -> GammaGamma:
        """Fit on the repeat buyers (``x > 0``) of a frame with ``x`` and ``monetary``."""
        repeat = summary[(summary["x"] > 0) & (summary["monetary"] > 0)]
        if len(repeat) < 2:
            raise ValueError("Gamma-Gamma needs at least two repeat buyers with spend")
        x, m = repeat["x"].to_numpy(dtype=float), repeat["monetary"].to_numpy(dtype=float)

        def loss(log_params: np.ndarray) -> float:
            p, q, gamma = np.exp(log_params)
            ll = (gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(gamma)
                  + (p * x - 1) * np.log(m) + p * x * np.log(x)
                  - (p * x + q) * np.log(x * m + gamma))
            return -float(ll.sum())

        result = minimize(loss, np.log([1.0, 2.0, float(np.mean(m))]), method="Nelder-Mead",
                          options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-8})
        self.p_, self.q_, self.gamma_ = np.exp(result.x)
        return self

    def expected_spend_per_purchase(self, summary: pd.DataFrame) -> np.ndarray:
        """E[spend per purchase | history]: the population mean, shrunk toward each repeat
        buyer's own mean as their purchases add up."""
        x, m = summary["x"].to_numpy(dtype=float), summary["monetary"].to_numpy(dtype=float)
        p, q, gamma = self.p_, self.q_, self.gamma_
        return p * (gamma + x * m) / (p * x + q - 1.0)
