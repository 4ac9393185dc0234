"""Data contract, validation, point-in-time features and labels, synthetic data."""
