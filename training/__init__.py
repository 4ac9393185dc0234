"""Churn and uplift trainers, evaluation, and MLflow tracking and registry."""
