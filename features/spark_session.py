"""The Spark session the scale-out engine runs on: local by default, any cluster when told.

``local[*]`` (every core of this machine) unless ``SPARK_REMOTE`` names a Spark Connect
server or ``spark.master`` is set (``--master``, or ``SPARK_MASTER``). Every session reads and
writes time in UTC, as the DuckDB engine does, so the same rows give the same features.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import warnings
from typing import TYPE_CHECKING

from features.errors import ChurnError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

INSTALL_HINT = "install the Spark extra: pip install 'churn-propensity[spark]'"


PANDAS_WARNING = "PySpark does not yet fully support pandas"


class SparkUnavailable(ChurnError):
    """PySpark or Java is missing, so the Spark engine cannot start."""


def spark_problem() -> str | None:
    """Why a Spark session cannot start here (PySpark or Java missing), or None."""
    if importlib.util.find_spec("pyspark") is None:
        return f"PySpark is not installed: {INSTALL_HINT}"
    if os.environ.get("SPARK_REMOTE"):
        return None
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))) \
            and shutil.which("java") is None:
        return ("Java is not installed (Spark needs Java 17 or newer): install a JDK, e.g. "
                "apt-get install openjdk-17-jre-headless, or set JAVA_HOME")
    return None


def quiet_pandas_warning() -> None:
    """PySpark warns on import that it does not fully support pandas 3; the engine hands
    Arrow batches to Spark and converts them itself, so nothing it uses is affected."""
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
    # The Python workers Spark starts inherit this (on this machine; a cluster's own).
    ignore = f"ignore:{PANDAS_WARNING}:FutureWarning"
    current = os.environ.get("PYTHONWARNINGS", "")
    if ignore not in current:
        os.environ["PYTHONWARNINGS"] = f"{current},{ignore}" if current else ignore


def default_driver_memory() -> str:
    """``SPARK_DRIVER_MEMORY`` where it is set; otherwise half of this machine's memory, at
    least 4g. On ``local[*]`` every task runs in the driver's JVM, and held tables spill to
    disk only past what the heap can take: with 4g, holding the 550M events of a 10M base
    ran the heap out."""
    if os.environ.get("SPARK_DRIVER_MEMORY"):
        return os.environ["SPARK_DRIVER_MEMORY"]
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return "4g"
    return f"{max(4, total // 2**30 // 2)}g"


def spark_session(master: str | None = None, driver_memory: str | None = None,
                  shuffle_partitions: int | None = None) -> SparkSession:
    """The running Spark session, or a new one set up for the engine (the driver's memory
    as ``default_driver_memory`` says, unless given)."""
    problem = spark_problem()
    if problem:
        raise SparkUnavailable(problem)
    quiet_pandas_warning()
    from pyspark.sql import SparkSession

    # Local workers run this interpreter (with this project); a cluster names its own.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("churn")
    if not os.environ.get("SPARK_REMOTE"):
        builder = builder.master(master or os.environ.get("SPARK_MASTER") or "local[*]")
        builder = (builder.config("spark.driver.memory",
                                  driver_memory or default_driver_memory())
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.ui.enabled", os.environ.get("CHURN_SPARK_UI", "false")))
    session = builder.getOrCreate()
    conf = {"spark.sql.session.timeZone": "UTC",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
            # Results held in memory (the features, the scores) get partitions sized by
            # adaptive execution too, not spark.sql.shuffle.partitions' 200: a scoring task
            # of a few thousand rows paid more for loading the champions than for scoring.
            "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true"}
    if shuffle_partitions:
        conf["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    for key, value in conf.items():
        session.conf.set(key, value)
    if not os.environ.get("SPARK_REMOTE"):
        session.sparkContext.setLogLevel("ERROR")
    return session
