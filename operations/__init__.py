"""The production loop around scoring: the scoring run log, monitoring of matured scores and
drift, retraining a challenger, and campaigns run against a randomised holdout."""
