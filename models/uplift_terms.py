"""What a fitted uplift learner leaves: weighted terms whose sum is the effect.

A term is a LightGBM booster, the product of two (a two-part model's P(buy) x spend among
buyers), a ridge as plain arrays (``LinearEffect``) or a constant. That is all a saved uplift
model holds, so loading one needs LightGBM and NumPy, not the learners that fitted it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.forest import in_blocks


class Regressor(Protocol):
    def predict(self, X: pd.DataFrame) -> np.ndarray: ...


@dataclass
class Product:
    """The product of two models' predictions: P(buy | x) x E[spend | buy, x] in a two-part
    model. Holds LightGBM boosters only, so it saves as model text."""

    factors: tuple[lgb.Booster, lgb.Booster]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        first, second = self.factors
        return first.predict(X) * second.predict(X)


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.copysign(np.log1p(np.abs(x)), x)


@dataclass
class LinearEffect:
    """A fitted ridge on the design of ``fit_linear``, as plain arrays: numbers imputed by
    their median (with a missing flag where training had gaps), raw and signed-log,
    standardised; categories one-hot. ``predict`` repeats scikit-learn's transform."""

    numbers: list[str]
    medians: list[float]
    flagged: list[int]
    mean: list[float]
    scale: list[float]
    categories: dict[str, list]
    coef: list[float]
    intercept: float

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The ridge's prediction on its design (see the class), without building the
        design: the scaling is folded into the coefficients (a missing flag's signed log is
        the flag times log 2), so a batch costs one product per block of columns."""
        values = X[self.numbers].to_numpy(dtype=float)
        out = np.empty(len(values))
        # Row blocks on the forest's threads: the logarithms dominate and release the GIL.
        in_blocks(len(values), None, lambda part: self._numbers(values[part], out[part]))
        for (column, levels), weights in zip(self.categories.items(), self._category_weights,
                                             strict=True):
            codes = pd.Categorical(X[column].astype(object), categories=levels).codes
            out += np.where(codes >= 0, weights[codes], 0.0)
        return out

    def _numbers(self, values: np.ndarray, out: np.ndarray) -> None:
        """The numbers' part of the effect for a block of rows, written into ``out``."""
        raw, flags, logs, constant = self._folded
        missing = np.isnan(values)
        filled = np.where(missing, np.asarray(self.medians), values)
        out[:] = constant
        _add_products(out, filled, raw)
        _add_products(out, signed_log(filled), logs)
        if self.flagged:
            _add_products(out, missing[:, self.flagged], flags)

    @functools.cached_property
    def _folded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Per-column weights of the raw numbers, the missing flags and the numbers' signed
        logs, with the scaler folded in, and the constant left over."""
        k, width = len(self.numbers), len(self.numbers) + len(self.flagged)
        weights = np.asarray(self.coef[:2 * width]) / np.asarray(self.scale)
        constant = self.intercept - float(np.asarray(self.mean) @ weights)
        flags = weights[k:width] + np.log(2.0) * weights[width + k:2 * width]
        return weights[:k], flags, weights[width:width + k], constant

    @functools.cached_property
    def _category_weights(self) -> list[np.ndarray]:
        width = 2 * (len(self.numbers) + len(self.flagged))
        out, start = [], width
        for levels in self.categories.values():
            out.append(np.asarray(self.coef[start:start + len(levels)]))
            start += len(levels)
        return out

    @classmethod
    def from_pipeline(cls, pipeline, X: pd.DataFrame) -> LinearEffect:
        design, ridge = pipeline.steps[0][1], pipeline.steps[-1][1]
        numbers = list(design.transformers_[0][2])
        imputer, _, scaler = (step for _, step in design.named_transformers_["numbers"].steps)
        columns = list(design.transformers_[1][2])
        encoder = design.named_transformers_["categories"]
        categories = ({c: list(levels) for c, levels in zip(columns, encoder.categories_,
                                                            strict=True)} if columns else {})
        # keep_empty_features: a column empty in training is imputed with 0.
        medians = np.nan_to_num(imputer.statistics_, nan=0.0)
        flagged = [] if imputer.indicator_ is None else imputer.indicator_.features_.tolist()
        return cls(numbers, medians.tolist(), flagged, scaler.mean_.tolist(),
                   scaler.scale_.tolist(), categories, ridge.coef_.tolist(),
                   float(ridge.intercept_))


Term = tuple[float, Regressor]


def predict_terms(terms: list[Term], X: pd.DataFrame, cache: dict | None = None
                  ) -> np.ndarray:
    """The weighted sum of the terms' predictions: every fitted learner's effect.

    With ``cache`` (one dict per batch of rows ``X``), a model that appears in several terms
    (a two-part model's classifiers, in the spend effect and in its parts) is predicted once.
    """
    total = np.zeros(len(X))
    for weight, model in terms:
        total = total + weight * _predict(model, X, cache)
    return total


def _predict(model: Regressor, X: pd.DataFrame, cache: dict | None) -> np.ndarray:
    if cache is None:
        return model.predict(X)
    if isinstance(model, Product):
        first, second = model.factors
        return _predict(first, X, cache) * _predict(second, X, cache)
    if id(model) not in cache:
        cache[id(model)] = model.predict(X)
    return cache[id(model)]


@dataclass
class Combined:
    """Fitted terms that predict their weighted sum (an ensemble's plain average)."""

    terms: list[Term]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return predict_terms(self.terms, X)


@dataclass
class Constant:
    """A fixed amount added to every customer's effect (an ensemble's centring)."""

    value: float

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), self.value)


def _add_products(out: np.ndarray, matrix: np.ndarray, weights: np.ndarray) -> None:
    """``out += matrix @ weights``, each row's terms added in column order: the same bits
    whatever the block of rows and its place in memory (a BLAS product's rounding follows
    the alignment, so reruns differed in the last bit for a few customers)."""
    columns = np.ascontiguousarray(matrix.T, dtype=np.float64)
    for column, weight in zip(columns, weights, strict=True):
        out += column * weight
