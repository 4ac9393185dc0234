"""The feature registry: unique stable names, documented, and matching what the engine writes."""

from __future__ import annotations

from pathlib import Path

from features.registry import FEATURES, ID_COLUMNS, feature_names, registry_markdown

FIXED_NAMES = ["recency_days", "tenure_days", "orders_30d", "orders_90d", "orders_365d",
               "orders_total", "spend_90d", "spend_365d", "spend_total", "aov_365d"]


def test_names_are_unique_and_include_the_fixed_ones():
    names = feature_names()
    assert len(names) == len(set(names))
    assert set(FIXED_NAMES) <= set(names)
    assert not set(ID_COLUMNS) & set(names)


def test_every_windowed_feature_says_its_window():
    for feature in FEATURES:
        assert feature.description.strip(), feature.name
        if feature.name.endswith(("_7d", "_30d", "_90d", "_365d")):
            assert feature.window_days is not None, feature.name


def test_every_feature_has_a_short_distinct_label_for_reasons():
    labels = [f.label for f in FEATURES]
    assert all(0 < len(label) <= 40 for label in labels), [f.name for f in FEATURES
                                                           if not 0 < len(f.label) <= 40]
    assert len(set(labels)) == len(labels)
    assert not any("_" in label for label in labels)  # words, not column names


def test_docs_page_is_generated_from_the_registry():
    page = Path(__file__).resolve().parents[2] / "docs" / "FEATURES.md"
    assert page.read_text() == registry_markdown(), (
        "docs/FEATURES.md is stale: run python -m features.registry > docs/FEATURES.md")
