"""The feature registry: every feature's stable name, meaning, window and version.

Training and serving both read feature names and order from here, so a model can only be
fed the columns it was trained on. A feature keeps its name for as long as it keeps its
meaning; a change of meaning is a new name or a new version.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.contract import KNOWN_EVENT_TYPES

FEATURE_SET_VERSION = "1"

ORDER_WINDOWS = (30, 90, 365)
EVENT_WINDOWS = (7, 30, 90)
CHANNELS = ("web", "store", "app")


# Each event type in words: (a count of them, one of them).
EVENT_WORDS = {
    "email_sent": ("E-mails received", "e-mail received"),
    "email_open": ("E-mails opened", "e-mail opened"),
    "email_click": ("E-mail clicks", "e-mail click"), "site_visit": ("Site visits", "site visit"),
    "app_session": ("App sessions", "app session"), "cart_add": ("Cart adds", "cart add"),
    "support_contact": ("Support contacts", "support contact"),
    "content_download": ("Downloads", "download"), "unsubscribe": ("Unsubscribes", "unsubscribe"),
}


def _period(days: int) -> str:
    """'7 days', 'month', '3 months', 'year': how a marketer names a window."""
    return {7: "7 days", 30: "month", 90: "3 months", 365: "year"}.get(days, f"{days} days")


@dataclass(frozen=True)
class Feature:
    """One model input: windows are [as_of - window_days, as_of); None means all history."""

    name: str
    description: str
    window_days: int | None = None
    group: str = "purchase"
    version: str = FEATURE_SET_VERSION
    label: str = ""  # a few words a marketer reads in a reason, e.g. "Days since last order"


def unit_of(name: str) -> str:
    """The unit a feature's value is counted in, as a reason states it."""
    if name.endswith("_days") or name.startswith("days_since_"):
        return "days"
    if name.startswith(("spend_", "aov_")):
        return "in spend"
    if name.startswith("orders_") or name == "cart_adds_without_order_30d":
        return "orders" if name.startswith("orders_") else "cart adds"
    if name.startswith("channel_share_") or "_rate_" in name or name == "overdue_ratio":
        return "(share)" if name != "overdue_ratio" else "x the usual gap"
    if name == "unsubscribed":
        return "(1 = yes)"
    if name == "channels_used":
        return "channels"
    return "times"


def _purchase_features() -> list[Feature]:
    feats = [
        Feature("recency_days", "Days since the last order (NaN if none).",
                label="Days since last order"),
        Feature("tenure_days", "Days since sign-up or first order, whichever is earlier.",
                label="Days as a customer"),
    ]
    for days in ORDER_WINDOWS:
        feats.append(Feature(f"orders_{days}d", f"Orders in the last {days} days.", days,
                             label=f"Orders in the last {_period(days)}"))
    feats.append(Feature("orders_total", "Orders over all history.", label="Orders ever"))
    for days in ORDER_WINDOWS:
        feats.append(Feature(f"spend_{days}d", f"Spend net of returns, last {days} days.", days,
                             label=f"Spend in the last {_period(days)}"))
    feats += [
        Feature("spend_total", "Spend net of returns over all history.", label="Spend ever"),
        Feature("spend_prev_90d", "Spend net of returns in the 90 days before the last 90.", 180,
                label="Spend in the 3 months before last"),
        Feature("aov_365d", "Average order value, last 365 days (NaN if no order).", 365,
                label="Average order value this year"),
        Feature("aov_total", "Average order value over all history (NaN if no order).",
                label="Average order value ever"),
        Feature("gap_mean_days", "Mean days between distinct purchase days (NaN if < 2).",
                label="Usual days between orders"),
        Feature("gap_std_days", "Spread (population std) of days between purchase days.",
                label="Irregularity of orders (days)"),
        Feature("overdue_ratio", "recency_days / gap_mean_days: above 1 means overdue.",
                label="Overdue (times the usual gap)"),
        Feature("spend_trend_90d",
                "(spend_90d - spend_prev_90d) / (|spend_90d| + |spend_prev_90d|), in [-1, 1].",
                180, label="Spend trend, last 3 months"),
    ]
    for channel in (*CHANNELS, "other"):
        feats.append(Feature(f"channel_share_{channel}",
                             f"Share of orders placed in channel '{channel}' (NaN if none).",
                             group="channel", label=f"Share of orders via {channel}"))
    feats.append(Feature("channels_used", "Distinct order channels used.", group="channel",
                         label="Order channels used"))
    return feats


def _event_features() -> list[Feature]:
    feats = []
    for event in KNOWN_EVENT_TYPES:
        for days in EVENT_WINDOWS:
            feats.append(Feature(f"{event}_{days}d", f"'{event}' events in the last {days} days.",
                                 days, group="engagement",
                                 label=f"{EVENT_WORDS[event][0]} in the last {_period(days)}"))
        feats.append(Feature(f"days_since_{event}", f"Days since the last '{event}' (NaN if none).",
                             group="engagement",
                             label=f"Days since last {EVENT_WORDS[event][1]}"))
    return [
        *feats,
        Feature("email_open_rate_90d", "email_open_90d / email_sent_90d (NaN if none sent).", 90,
                group="engagement", label="E-mail open rate, last 3 months"),
        Feature("email_click_rate_90d", "email_click_90d / email_sent_90d (NaN if none sent).",
                90, group="engagement", label="E-mail click rate, last 3 months"),
        Feature("cart_adds_without_order_30d",
                "Cart adds in the last 30 days made after the last order.", 30,
                group="engagement", label="Abandoned cart adds, last month"),
        Feature("unsubscribed", "1 if the customer ever unsubscribed, else 0.",
                group="engagement", label="Unsubscribed (1 = yes)"),
    ]


FEATURES: tuple[Feature, ...] = tuple(_purchase_features() + _event_features())
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
ID_COLUMNS = ("customer_id", "as_of")


def feature_names() -> list[str]:
    """Feature column names, in the order models receive them."""
    return [f.name for f in FEATURES]


def registry_markdown() -> str:
    """The registry as the Markdown page docs/FEATURES.md."""
    lines = [
        f"# Features (feature set version {FEATURE_SET_VERSION})",
        "",
        "Generated from `features/registry.py` by `python -m features.registry`; do not edit.",
        "Windows are `[as_of - N days, as_of)`; an empty window means all history before",
        "`as_of`. Every output row also has `customer_id` and `as_of`.",
        "",
        "| # | name | label (in reasons) | group | window (days) | version | meaning |",
        "|---:|---|---|---|---:|---|---|",
    ]
    for number, f in enumerate(FEATURES, start=1):
        window = "" if f.window_days is None else str(f.window_days)
        meaning = f.description.replace("|", "\\|")
        lines.append(f"| {number} | `{f.name}` | {f.label} | {f.group} | {window} | {f.version} "
                     f"| {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(registry_markdown(), end="")
