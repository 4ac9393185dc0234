"""Contract tables -> validated -> point-in-time features, on DuckDB or Spark."""

import warnings

# pandera imports pyspark.pandas wherever PySpark is installed, and PySpark warns on pandas 3
# as it loads; the engines hand Spark Arrow batches and convert them themselves.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                        category=FutureWarning)
