"""The `churn` command line."""
