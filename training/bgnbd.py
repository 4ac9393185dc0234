"""BG/NBD (Fader, Hardie & Lee 2005) by maximum likelihood: the buy-till-you-die baseline.

While alive a customer buys at a Poisson rate lambda ~ Gamma(r, alpha); after each purchase
they drop out with probability p ~ Beta(a, b). Fitted on ``x, t_x, T`` (see features/clv.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1


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
        x, t_x, big_t = (summary[c].to_numpy(dtype=float) for c in ("x", "t_x", "T"))
        if len(x) == 0:
            raise ValueError("BG/NBD needs at least one customer to fit")

        def loss(log_params: np.ndarray) -> float:
            return -self._log_likelihood(np.exp(log_params), x, t_x, big_t).sum()

        start = np.log([1.0, max(big_t.mean(), 1.0), 1.0, 1.0])
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

    def expected_purchases(self, summary: pd.DataFrame, t: float) -> np.ndarray:
        """Expected number of purchases in the next ``t`` time units."""
        x, t_x, big_t = (summary[c].to_numpy(dtype=float) for c in ("x", "t_x", "T"))
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        z = t / (alpha + big_t + t)
        growth = 1.0 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyp2f1(
            r + x, b + x, a + b + x - 1, z)
        return (a + b + x - 1) / (a - 1) * growth / (1.0 + self._odds_dead(x, t_x, big_t))
