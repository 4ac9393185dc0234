"""Synthetic contract tables with a known truth, for demos, tests and benchmarks.

Purchases follow a heterogeneous buy-till-you-die process (Pareto/NBD: each customer buys
at a Poisson rate drawn from a gamma distribution until an exponential lifetime ends).
Engagement fades in the weeks before a customer leaves: opens, clicks, visits and app
sessions fall while support contacts and unsubscribes rise. A randomised campaign in
``exposures`` changes spend by an amount that depends on what the features can see:
engaged customers who have started to drift respond (more of them buy, with cheaper baskets:
the offer is a discount), frequent buyers take the discount on orders they would have placed
anyway, and customers already leaving are put off. ``ground_truth`` holds each customer's
true effect on spend, on buying at all, and on spend among buyers in the window.

Customers are generated in fixed-size chunks, each with its own random stream spawned from
the seed, so the output is the same for a seed whatever the machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.contract import ARROW_TIMESTAMP, KNOWN_EVENT_TYPES

CHUNK_CUSTOMERS = 50_000
EVENT_CODES = {name: code for code, name in enumerate(KNOWN_EVENT_TYPES)}
US_PER_DAY = 86_400_000_000
# Buying more often than every 17 days (about the top 15%): the offer only discounts them.
FREQUENT_BUYER_RATE = 1 / 17


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate. Dates are UTC days; history covers [start, end)."""

    customers: int = 10_000
    seed: int = 7
    start: date = date(2023, 1, 1)
    end: date = date(2026, 1, 1)
    campaign_id: str = "autumn_offer"
    campaign_days_before_end: int = 75
    treatment_share: float = 0.5
    outcome_days: int = 30
    newsletter_every_days: int = 21
    # A shift of the world from this day on: for ``shift_share`` of customers (a cohort drawn
    # at random) tracked engagement collapses (e-mail opens and clicks, site visits and app
    # sessions fall to ``shift_keep`` of their rate) while their buying goes on as before, as
    # when a consent banner or a mail client stops the tracking of part of the base.
    shift_at: date | None = None
    shift_share: float = 0.5
    shift_keep: float = 0.05

    @property
    def days(self) -> float:
        return float((self.end - self.start).days)

    @property
    def campaign_day(self) -> float:
        return self.days - self.campaign_days_before_end

    @property
    def shift_day(self) -> float | None:
        return None if self.shift_at is None else float((self.shift_at - self.start).days)


@dataclass
class Chunk:
    """One chunk of customers: every contract table plus the ground truth, as Arrow tables."""

    transactions: pa.Table
    events: pa.Table
    customers: pa.Table
    exposures: pa.Table
    ground_truth: pa.Table


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def fade(days_to_departure: np.ndarray) -> np.ndarray:
    """Engagement multiplier: about 1 until ~90 days before leaving, then falling to ~0."""
    return _sigmoid((days_to_departure - 45.0) / 15.0)


class _Customers:
    """Latent traits of one chunk of customers (all arrays of length n)."""

    def __init__(self, rng: np.random.Generator, n: int, cfg: GenerateConfig) -> None:
        self.n = n
        self.signup = rng.uniform(0.0, cfg.days - 30.0, n)
        self.rate = rng.gamma(0.9, 1.0 / 30.0, n)  # orders per day while alive
        self.hazard = rng.gamma(0.8, 1.0 / 250.0, n)  # dropout per day
        self.death = self.signup + rng.exponential(1.0, n) / self.hazard
        self.alive_until = np.minimum(self.death, cfg.days)
        self.buys_at_signup = rng.random(n) < 0.8
        self.mean_spend = rng.gamma(4.0, 12.0, n)
        self.engagement = rng.gamma(2.0, 0.5, n)
        self.open_prob = rng.beta(2.0, 4.0, n)
        self.click_prob = rng.beta(1.5, 6.0, n)
        self.app_user = rng.random(n) < 0.3
        prefs = rng.gamma(np.array([2.0, 1.0, 0.6]), 1.0, (n, 3))
        prefs[:, 2] *= self.app_user
        self.channel_cdf = np.cumsum(prefs / prefs.sum(axis=1, keepdims=True), axis=1)
        leaves_unsubscribed = (self.death < cfg.days) & (rng.random(n) < 0.35)
        unsubscribe = np.where(leaves_unsubscribed,
                               self.death - rng.exponential(30.0, n),
                               rng.uniform(self.signup, self.signup + 3 * cfg.days, n))
        unsubscribe = np.maximum(unsubscribe, self.signup + 1.0)
        self.unsubscribe = np.where(unsubscribe < cfg.days, unsubscribe, np.inf)


def _poisson_times(rng: np.random.Generator, rate: np.ndarray, begin: np.ndarray,
                   stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event owners and times of a Poisson process per customer on [begin, stop)."""
    length = np.maximum(stop - begin, 0.0)
    counts = rng.poisson(rate * length)
    owner = np.repeat(np.arange(len(rate)), counts)
    times = begin[owner] + rng.random(len(owner)) * length[owner]
    return owner, times


def _thinned(rng: np.random.Generator, rate: np.ndarray, begin: np.ndarray, stop: np.ndarray,
             keep: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A Poisson process whose rate is ``rate * keep(owner, t)``, with ``keep`` in [0, 1]."""
    owner, times = _poisson_times(rng, rate, begin, stop)
    kept = rng.random(len(owner)) < keep(owner, times)
    return owner[kept], times[kept]


def _orders(rng: np.random.Generator, c: _Customers) -> tuple[np.ndarray, np.ndarray]:
    owner, times = _poisson_times(rng, c.rate, c.signup, c.alive_until)
    first = np.flatnonzero(c.buys_at_signup)
    first_times = c.signup[first] + rng.uniform(0.0, 0.05, len(first))
    return np.concatenate([owner, first]), np.concatenate([times, first_times])


def _amounts(rng: np.random.Generator, c: _Customers, owner: np.ndarray) -> np.ndarray:
    return np.round(rng.gamma(6.0, c.mean_spend[owner] / 6.0), 2) + 0.99


def _channels(rng: np.random.Generator, c: _Customers, owner: np.ndarray) -> np.ndarray:
    u = rng.random(len(owner))[:, None]
    return (u > c.channel_cdf[owner]).sum(axis=1)


@dataclass
class _Campaign:
    eligible: np.ndarray
    treated: np.ndarray
    exposed_at: np.ndarray
    rate_lift: np.ndarray
    aov_lift: np.ndarray
    true_uplift_spend: np.ndarray
    true_uplift_conversion: np.ndarray
    true_uplift_order_value: np.ndarray


def _orders_per_buyer(orders: np.ndarray) -> np.ndarray:
    """E[N | N > 0] for Poisson(orders): the expected orders of a customer who buys at all."""
    safe = np.maximum(orders, 1e-12)
    return np.where(orders > 1e-9, safe / -np.expm1(-safe), 1.0)


def _campaign(rng: np.random.Generator, c: _Customers, cfg: GenerateConfig,
              order_owner: np.ndarray, order_times: np.ndarray) -> _Campaign:
    """Who is in the experiment, who is treated, and how the offer changes their buying."""
    day = cfg.campaign_day
    eligible = (c.signup < day - 30.0) & (c.unsubscribe > day)
    treated = eligible & (rng.random(c.n) < cfg.treatment_share)
    last_order = np.full(c.n, -np.inf)
    before = order_times < day
    np.maximum.at(last_order, order_owner[before], order_times[before])
    recency = day - last_order
    drifting = (recency > 30.0) & (recency < 200.0)
    responsive = c.open_prob * np.minimum(c.engagement, 2.0)
    leaving = fade(c.death - day) < 0.5
    frequent = c.rate > FREQUENT_BUYER_RATE
    rate_lift = np.where(drifting, 2.5, 0.6) * _sigmoid((responsive - 0.3) / 0.08)
    rate_lift = np.where(frequent, 0.0, rate_lift)
    rate_lift = np.where(leaving, -0.5, rate_lift)
    # The offer is a discount: frequent buyers only trade down; drifting ones who respond
    # come back, but with cheaper baskets (more buyers, lower order value).
    aov_lift = np.where(frequent, -0.2, np.where(drifting, -0.25, 0.0))
    exposed_at = day + rng.uniform(0.0, 0.5, c.n)
    # Expected order spend (before returns) in [exposed_at, exposed_at + outcome_days).
    alive_days = np.clip(c.alive_until - exposed_at, 0.0, cfg.outcome_days)
    expected = c.rate * alive_days * (c.mean_spend + 0.99)
    uplift = np.where(eligible, expected * ((1 + rate_lift) * (1 + aov_lift) - 1), np.nan)
    # Buying at all, and spend among buyers, in the window: treated minus control.
    orders = c.rate * alive_days
    treated_orders = orders * np.clip(1 + rate_lift, 0.0, None)
    conversion = -np.expm1(-treated_orders) + np.expm1(-orders)
    order_value = (c.mean_spend + 0.99) * ((1 + aov_lift) * _orders_per_buyer(treated_orders)
                                          - _orders_per_buyer(orders))
    return _Campaign(eligible, treated, exposed_at, rate_lift, aov_lift, uplift,
                     np.where(eligible, conversion, np.nan),
                     np.where(eligible, order_value, np.nan))


def _apply_campaign(rng: np.random.Generator, c: _Customers, cfg: GenerateConfig,
                    camp: _Campaign, owner: np.ndarray, times: np.ndarray,
                    amounts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Treated customers' orders in the outcome window: extra, fewer, or cheaper."""
    window_end = camp.exposed_at + cfg.outcome_days

    def treated_in_window(owner: np.ndarray, times: np.ndarray) -> np.ndarray:
        return camp.treated[owner] & (times >= camp.exposed_at[owner]) & (
            times < window_end[owner])

    drop_prob = np.clip(-camp.rate_lift[owner], 0.0, 1.0)
    keep = ~(treated_in_window(owner, times) & (rng.random(len(owner)) < drop_prob))
    extra_rate = c.rate * np.clip(camp.rate_lift, 0.0, None) * camp.treated
    x_owner, x_times = _poisson_times(rng, extra_rate, camp.exposed_at,
                                      np.minimum(window_end, c.alive_until))
    x_amounts = _amounts(rng, c, x_owner)
    owner = np.concatenate([owner[keep], x_owner])
    times = np.concatenate([times[keep], x_times])
    amounts = np.concatenate([amounts[keep], x_amounts])
    discounted = treated_in_window(owner, times)
    amounts = np.where(discounted, np.round(amounts * (1 + camp.aov_lift[owner]), 2), amounts)
    return owner, times, amounts


def _newsletters(c: _Customers, cfg: GenerateConfig) -> tuple[np.ndarray, np.ndarray]:
    """Everyone subscribed gets the newsletter on the same days until they unsubscribe."""
    grid = np.arange(0.4, cfg.days, float(cfg.newsletter_every_days))
    first = np.searchsorted(grid, c.signup)
    last = np.searchsorted(grid, np.minimum(c.unsubscribe, cfg.days))
    counts = np.maximum(last - first, 0)
    owner = np.repeat(np.arange(c.n), counts)
    offsets = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, grid[first[owner] + offsets]


def _events(rng: np.random.Generator, c: _Customers, cfg: GenerateConfig,
            order_owner: np.ndarray, order_times: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    end = np.full(c.n, cfg.days)
    parts: list[tuple[str, np.ndarray, np.ndarray]] = []

    def engaged(owner: np.ndarray, t: np.ndarray) -> np.ndarray:
        return fade(c.death[owner] - t)

    sent_owner, sent_times = _newsletters(c, cfg)
    parts.append(("email_sent", sent_owner, sent_times))
    opened = rng.random(len(sent_owner)) < c.open_prob[sent_owner] * np.where(
        sent_times < c.death[sent_owner], engaged(sent_owner, sent_times), 0.03)
    open_owner = sent_owner[opened]
    open_times = sent_times[opened] + rng.exponential(0.3, len(open_owner))
    parts.append(("email_open", open_owner, open_times))
    clicked = rng.random(len(open_owner)) < c.click_prob[open_owner]
    parts.append(("email_click", open_owner[clicked],
                  open_times[clicked] + rng.exponential(0.01, int(clicked.sum()))))
    visit_rate = 0.035 * c.engagement
    v_owner, v_times = _thinned(rng, visit_rate, c.signup, c.alive_until, engaged)
    late_owner, late_times = _poisson_times(rng, np.full(c.n, 0.002), c.alive_until, end)
    v_owner, v_times = np.concatenate([v_owner, late_owner]), np.concatenate([v_times, late_times])
    parts.append(("site_visit", v_owner, v_times))
    app_rate = 0.06 * c.engagement * c.app_user
    parts.append(("app_session", *_thinned(rng, app_rate, c.signup, c.alive_until, engaged)))
    abandoned = rng.random(len(v_owner)) < 0.1
    cart_owner = np.concatenate([v_owner[abandoned], order_owner])
    cart_times = np.concatenate([
        v_times[abandoned] + rng.exponential(0.005, int(abandoned.sum())),
        order_times - rng.uniform(0.0, 0.08, len(order_times)),
    ])
    parts.append(("cart_add", cart_owner, cart_times))

    def troubled(owner: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (1.0 + 6.0 * (1.0 - engaged(owner, t))) / 7.0

    parts.append(("support_contact",
                  *_thinned(rng, np.full(c.n, 0.02), c.signup, c.alive_until, troubled)))
    parts.append(("content_download",
                  *_thinned(rng, 0.004 * c.engagement, c.signup, c.alive_until, engaged)))
    unsub = np.flatnonzero(np.isfinite(c.unsubscribe))
    parts.append(("unsubscribe", unsub, c.unsubscribe[unsub]))
    owner = np.concatenate([p[1] for p in parts])
    times = np.concatenate([p[2] for p in parts])
    codes = np.concatenate([np.full(len(p[1]), EVENT_CODES[p[0]], np.int8) for p in parts])
    visible = times < cfg.days
    return owner[visible], times[visible], codes[visible]


class _Stamp:
    """Turns day offsets from ``start`` into Arrow UTC timestamps."""

    def __init__(self, start: date) -> None:
        origin = datetime(start.year, start.month, start.day, tzinfo=UTC)
        self.origin_us = int(origin.timestamp() * 1_000_000)

    def __call__(self, days: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
        days = np.asarray(days) if missing is None else np.where(missing, 0.0, days)
        us = self.origin_us + np.round(days * US_PER_DAY).astype(np.int64)
        return pa.array(us, type=pa.int64(), mask=missing).cast(ARROW_TIMESTAMP)


def customer_ids(first: int, n: int) -> pa.Array:
    """Ids 'C0000001', ... for customers ``first`` .. ``first + n - 1``."""
    numbers = pa.array(np.arange(first + 1, first + n + 1), type=pa.int64())
    padded = pc.utf8_lpad(pc.cast(numbers, pa.string()), width=7, padding="0")
    return pc.binary_join_element_wise("C", padded, "")


def generate_chunk(cfg: GenerateConfig, index: int, first: int, n: int,
                   rng: np.random.Generator) -> Chunk:
    """Generate customers ``first`` .. ``first + n - 1`` with their own random stream."""
    c = _Customers(rng, n, cfg)
    stamp = _Stamp(cfg.start)
    ids = customer_ids(first, n)
    o_owner, o_times = _orders(rng, c)
    o_amounts = _amounts(rng, c, o_owner)
    camp = _campaign(rng, c, cfg, o_owner, o_times)
    o_owner, o_times, o_amounts = _apply_campaign(rng, c, cfg, camp, o_owner, o_times, o_amounts)
    visible = o_times < cfg.days
    o_owner, o_times, o_amounts = o_owner[visible], o_times[visible], o_amounts[visible]
    order = np.lexsort((o_times, o_owner))
    o_owner, o_times, o_amounts = o_owner[order], o_times[order], o_amounts[order]
    e_owner, e_times, e_codes = _events(rng, c, cfg, o_owner, o_times)
    in_cohort = np.zeros(n, dtype=bool)
    if cfg.shift_day is not None:
        # Its own stream, so a world without the shift is the same as before it existed.
        shift_rng = np.random.default_rng([cfg.seed, index, 1])
        in_cohort = shift_rng.random(n) < cfg.shift_share
        kept = _after_shift(shift_rng, cfg, in_cohort, e_owner, e_times, e_codes)
        e_owner, e_times, e_codes = e_owner[kept], e_times[kept], e_codes[kept]
    transactions = _transactions(rng, c, cfg, index, ids, stamp, o_owner, o_times, o_amounts)
    events = pa.table({
        "customer_id": ids.take(pa.array(e_owner)),
        "occurred_at": stamp(e_times),
        "event_type": pa.DictionaryArray.from_arrays(
            pa.array(e_codes), pa.array(KNOWN_EVENT_TYPES)).cast(pa.string()),
    })
    customers = pa.table({
        "customer_id": ids,
        "signed_up_at": stamp(c.signup),
        "profiling_consent": pa.array(rng.random(n) < 0.98),
        "marketing_consent": pa.array(rng.random(n) < 0.9),
    })
    exp = np.flatnonzero(camp.eligible)
    exposures = pa.table({
        "customer_id": ids.take(pa.array(exp)),
        "campaign_id": pa.array([cfg.campaign_id] * len(exp), pa.string()),
        "exposed_at": stamp(camp.exposed_at[exp]),
        "treatment": pa.array(camp.treated[exp].astype(np.int8)),
    })
    died = c.death < cfg.days
    truth = pa.table({
        "customer_id": ids,
        "purchase_rate_per_day": c.rate,
        "churn_hazard_per_day": c.hazard,
        "departed_at": stamp(c.death, missing=~died),
        "alive_at_end": ~died,
        "mean_order_value": c.mean_spend + 0.99,
        "email_open_prob": c.open_prob,
        "campaign_id": pa.array([cfg.campaign_id] * n, pa.string()),
        "in_experiment": camp.eligible,
        "treatment": pa.array(np.where(camp.eligible, camp.treated.astype(np.int8), None),
                              type=pa.int8()),
        "true_uplift_spend": pa.array(camp.true_uplift_spend, from_pandas=True),
        "true_uplift_conversion": pa.array(camp.true_uplift_conversion, from_pandas=True),
        "true_uplift_order_value": pa.array(camp.true_uplift_order_value, from_pandas=True),
        "shifted_cohort": in_cohort,
    })
    return Chunk(transactions, events, customers, exposures, truth)


SHIFTED_EVENTS = ("email_open", "email_click", "site_visit", "app_session")


def _after_shift(rng: np.random.Generator, cfg: GenerateConfig, in_cohort: np.ndarray,
                 owner: np.ndarray, times: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Which events survive the shift: the cohort's tracked engagement after ``shift_at``
    is kept with probability ``shift_keep``."""
    shifted = np.isin(codes, [EVENT_CODES[name] for name in SHIFTED_EVENTS])
    hit = shifted & in_cohort[owner] & (times >= cfg.shift_day)
    return ~hit | (rng.random(len(owner)) < cfg.shift_keep)


def _transactions(rng: np.random.Generator, c: _Customers, cfg: GenerateConfig, index: int,
                  ids: pa.Array, stamp: _Stamp, owner: np.ndarray, times: np.ndarray,
                  amounts: np.ndarray) -> pa.Table:
    """Orders, plus a few later return rows (negative amount, same order id)."""
    numbers = pa.array(index * 100_000_000 + np.arange(len(owner)), type=pa.int64())
    order_ids = pc.binary_join_element_wise("O", pc.cast(numbers, pa.string()), "")
    channels = pa.array(["web", "store", "app"]).take(pa.array(_channels(rng, c, owner)))
    returned = np.flatnonzero(rng.random(len(owner)) < 0.04)
    r_times = times[returned] + rng.uniform(3.0, 30.0, len(returned))
    keep = r_times < cfg.days
    returned, r_times = returned[keep], r_times[keep]
    r_amounts = -np.round(amounts[returned] * rng.uniform(0.3, 1.0, len(returned)), 2)
    all_owner = np.concatenate([owner, owner[returned]])
    return pa.table({
        "customer_id": ids.take(pa.array(all_owner)),
        "order_id": pa.concat_arrays([order_ids, order_ids.take(pa.array(returned))]),
        "ordered_at": stamp(np.concatenate([times, r_times])),
        "amount": pa.array(np.concatenate([amounts, r_amounts])),
        "channel": pa.concat_arrays([channels, channels.take(pa.array(returned))]),
    })


def chunks(cfg: GenerateConfig) -> Iterator[Chunk]:
    """All chunks in order; chunk k always gets the k-th stream spawned from the seed."""
    count = max(1, -(-cfg.customers // CHUNK_CUSTOMERS))
    streams = np.random.SeedSequence(cfg.seed).spawn(count)
    for index, stream in enumerate(streams):
        first = index * CHUNK_CUSTOMERS
        n = min(CHUNK_CUSTOMERS, cfg.customers - first)
        yield generate_chunk(cfg, index, first, n, np.random.default_rng(stream))


TABLE_NAMES = ("transactions", "events", "customers", "exposures", "ground_truth")


class _TableWriters:
    """Appends each chunk to one file per table, written under a temporary name first."""

    def __init__(self, out: Path, fmt: str) -> None:
        self.out, self.fmt = out, fmt
        self.writers: dict[str, pq.ParquetWriter | pacsv.CSVWriter] = {}

    def path(self, name: str, tmp: bool = False) -> Path:
        fmt = "parquet" if name == "ground_truth" else self.fmt
        return self.out / f"{'.' if tmp else ''}{name}.{fmt}{'.tmp' if tmp else ''}"

    def write(self, name: str, table: pa.Table) -> None:
        if name not in self.writers:
            target = self.path(name, tmp=True)
            if self.fmt == "csv" and name != "ground_truth":
                self.writers[name] = pacsv.CSVWriter(target, table.schema)
            else:
                self.writers[name] = pq.ParquetWriter(target, table.schema)
        self.writers[name].write_table(table)

    def close(self) -> None:
        for name, writer in self.writers.items():
            writer.close()
            self.path(name, tmp=True).replace(self.path(name))


def generate(cfg: GenerateConfig, out: Path, fmt: str = "parquet",
             progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write the four contract tables and ``ground_truth.parquet`` to ``out``; return rows."""
    out.mkdir(parents=True, exist_ok=True)
    writers = _TableWriters(out, fmt)
    rows = dict.fromkeys(TABLE_NAMES, 0)
    for chunk in chunks(cfg):
        for name in TABLE_NAMES:
            table = getattr(chunk, name)
            writers.write(name, table)
            rows[name] += table.num_rows
        if progress is not None:
            progress(chunk.customers.num_rows)
    writers.close()
    return rows


def as_of_default(cfg: GenerateConfig) -> date:
    """A cutoff that leaves 90 days of outcomes inside the generated history."""
    return cfg.end - timedelta(days=90)
