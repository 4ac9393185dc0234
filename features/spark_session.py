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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from features.errors import ChurnError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

INSTALL_HINT = "install the Spark extra: pip install 'churn-propensity[spark]'"


PANDAS_WARNING = "PySpark does not yet fully support pandas"


class SparkUnavailable(ChurnError):
    """PySpark or Java is missing, so the Spark engine cannot start."""


class SparkStopped(ChurnError):
    """Spark's context stopped in the middle of a job; most often its memory ran out."""


# What a job's call into Spark raises when the context under it died (an OutOfMemoryError
# in any of the JVM's threads stops it): the cause is in Spark's own log, above.
STOPPED = ("SparkContext was shut down", "OutOfMemoryError")

# The driver memory the running local session started with, as it reports it (a session
# that was already running keeps its own): what a job that ran it out names.
_driver_memory: dict[str, str] = {}


@contextmanager
def spark_job_errors() -> Iterator[None]:
    """A job whose Spark context died ends in one line that says what to try, not in a
    Java stack trace; any other error passes on as it is."""
    try:
        yield
    except Exception as err:
        if not any(sign in str(err) for sign in STOPPED):
            raise
        raise SparkStopped(
            "Spark stopped in the middle of the job (its log above says why; most often "
            f"the driver's memory, {driver_memory()} here, ran out): give it more "
            "with SPARK_DRIVER_MEMORY (e.g. SPARK_DRIVER_MEMORY=16g), or run on a cluster "
            "(SPARK_MASTER, SPARK_REMOTE)") from None


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


def driver_memory() -> str:
    """The running local session's driver memory, or the default a new one would get."""
    return _driver_memory.get("local") or default_driver_memory()


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
        _driver_memory["local"] = session.sparkContext.getConf().get("spark.driver.memory")
    return session
