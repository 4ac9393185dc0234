"""Three roles for cutoffs: training, validation and test, each a label horizon apart.

Training cutoffs fit the trees; the validation cutoff stops them early and picks the
calibration; the test cutoff, which neither saw, gives the registered model's metrics. A
cutoff's label window [T, T + horizon) must end at or before the next role's cutoff, so no
label of an earlier role is computed from orders a later role is judged on (the purge gap).

With no dates given, the roles come from the data's own span: the test cutoff is the latest
first of a month whose label window has ended, the validation cutoff the latest first of a
month one horizon before it, and the training cutoffs the ``count`` months ending one
horizon before that (months before the first order are left out: their base is empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from features.contract import ContractError
from features.errors import setting
from features.labels import check_matured
from training.config import DEFAULT_TRAIN_CUTOFFS


class CutoffError(ContractError):
    """Cutoffs whose roles overlap or fall outside the data."""


@dataclass(frozen=True)
class CutoffPlan:
    """The cutoffs of each role, and any default cutoffs left out (with why)."""

    train: tuple[date, ...]
    validation: date
    test: date
    horizon_days: int
    notices: tuple[str, ...] = field(default_factory=tuple)

    def all(self) -> list[date]:
        return [*self.train, self.validation, self.test]

    def fitted_through(self) -> date:
        """The first day of data the registered model (refitted on train + validation)
        never saw: the end of the validation cutoff's label window."""
        return self.validation + timedelta(days=self.horizon_days)


def month_start_on_or_before(day: date) -> date:
    return day.replace(day=1)


def months_back(last: date, count: int) -> tuple[date, ...]:
    """``count`` firsts of the month, ending with ``last``'s month, oldest first."""
    out, day = [], last.replace(day=1)
    for _ in range(count):
        out.append(day)
        day = (day - timedelta(days=1)).replace(day=1)
    return tuple(sorted(out))


def _purge_check(earlier: list[date], later: date, role: str, later_role: str,
                 horizon: int) -> None:
    late = [c for c in earlier if c + timedelta(days=horizon) > later]
    if late:
        latest = later - timedelta(days=horizon)
        raise CutoffError(
            f"{role} cutoff {', '.join(c.isoformat() for c in late)}: its {horizon}-day label "
            f"window ends after the {later_role} cutoff {later.isoformat()}, so its labels would "
            f"come from the period the {later_role} cutoff is judged on. The latest {role} "
            f"cutoff that works is {latest.isoformat()}")


def plan_cutoffs(horizon_days: int, data_start: date, data_end: date,
                 train: tuple[date, ...] | None = None, validation: date | None = None,
                 test: date | None = None,
                 train_count: int = DEFAULT_TRAIN_CUTOFFS) -> CutoffPlan:
    """Resolve the three roles from what the user gave and the data's span ``[start, end)``."""
    gap = timedelta(days=horizon_days)
    test = test or month_start_on_or_before(data_end - gap)
    check_matured([test], horizon_days, data_end)
    validation = validation or month_start_on_or_before(test - gap)
    _purge_check([validation], test, "validation", "test", horizon_days)
    notices: list[str] = []
    if train:
        if len(set(train)) != len(train):
            raise CutoffError(f"{setting('cutoffs')}: a date is listed twice")
        _purge_check(sorted(train), validation, "training", "validation", horizon_days)
    else:
        if train_count < 1:
            raise CutoffError(f"{setting('cutoffs')}: give at least one training cutoff")
        candidates = months_back(validation - gap, train_count)
        train = tuple(c for c in candidates if c > data_start)
        dropped = [c for c in candidates if c <= data_start]
        if dropped:
            notices.append(f"left out training cutoffs {', '.join(c.isoformat() for c in dropped)}"
                           f": no order before them (the data starts {data_start.isoformat()})")
    if not train:
        raise CutoffError(
            f"no training cutoff fits: it must be at least {horizon_days} days before the "
            f"validation cutoff {validation.isoformat()} and after the first order "
            f"({data_start.isoformat()}). Use more history or a shorter {setting('horizon_days')}")
    if min(train) <= data_start:
        raise CutoffError(f"training cutoff {min(train).isoformat()}: no order before it (the "
                          f"data starts {data_start.isoformat()})")
    return CutoffPlan(tuple(sorted(train)), validation, test, horizon_days, tuple(notices))
