"""Names shared by everything that writes or reads the model registry.

Registered model names, the alias a champion holds, and where a training run keeps the rows
a later promotion or monitor judges a model on.
"""

from __future__ import annotations

CHURN_MODEL_NAME = "churn"
UPLIFT_MODEL_NAME = "uplift"
PROPENSITY_MODEL_NAME = "propensity"
VALUE_MODEL_NAME = "value"
CHAMPION = "champion"

VALIDATION_ARTIFACT = "validation/validation.parquet"
TEST_ARTIFACT = "test/test.parquet"
