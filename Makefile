# `make demo` and `make test` each create .venv when it is missing and install the project
# (`make test` adds the test tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APP := $(VENV)/.installed-app
STAMP := $(VENV)/.installed

.PHONY: demo test notebooks browser bench bench-value bench-churn bench-serving bench-soak bench-batch bench-uplift bench-uplift-suite bench-monitor bench-spark lint clean

# The project alone, for the demo; the test tools on top, for the suite.
$(APP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(APP)

$(STAMP): $(APP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(APP)
	$(BIN)/churn demo

# One worker per core (pytest-xdist); the tests of a file run on one worker, so a module
# fixture is built once. Extra pytest arguments: make test PYTEST_ARGS='-k monitor'.
# The 15 slowest tests are listed at the end, to keep an eye on the suite's time.
PYTEST_ARGS ?=
test: $(STAMP) browser
	$(BIN)/python -m pytest -n auto --dist loadfile --durations=15 $(PYTEST_ARGS)

# Execute every notebook in a Jupyter kernel and save it with its outputs.
notebooks: $(STAMP)
	$(BIN)/python -m tests.notebooks.kernel notebooks/*.ipynb

# Headless Chromium (Debian's package) for the test that opens the API docs in a browser.
# Installed when missing and this runs as root with apt-get; otherwise that test skips
# (under CI=true it fails instead).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	       || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; } \
	  || echo "chromium not installed: the API docs browser test will skip (apt-get install chromium)"; }

bench: $(STAMP)
	$(BIN)/python bench/features.py

bench-churn: $(STAMP)
	$(BIN)/python bench/churn_cdnow.py

# Needs wrk on PATH (Debian: apt-get install wrk).
bench-serving: $(STAMP)
	$(BIN)/python bench/serving.py

# 10 minutes at 80% of the measured maximum rate; uses the model bench-serving registers.
bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py

# A year of weekly scoring runs of 1M customers, then `churn monitor` over them.
bench-monitor: $(STAMP)
	$(BIN)/python bench/monitor.py

# Uses the model bench-serving registers.
bench-batch: $(STAMP)
	$(BIN)/python bench/batch_scoring.py

# Propensity and value on CDNOW beside lifetimes' BG/NBD x Gamma-Gamma (the bench extra).
bench-value: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/value_cdnow.py

bench-uplift: $(STAMP)
	$(BIN)/python bench/uplift_hillstrom.py

# Every uplift learner and the default on the suite of experiments (needs the bench extra),
# three times over: new data for the simulated sets, new folds for all (about 35 minutes on
# 2 cores; REPLICATES=1 for one run).
REPLICATES ?= 3
bench-uplift-suite: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/uplift_suite.py --replicates $(REPLICATES)

# DuckDB vs Spark local[2] on 1M and 10M generated customers (Java 17 on PATH).
bench-spark: $(STAMP)
	$(BIN)/python bench/spark.py --customers 1000000 10000000

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-output .pytest_cache
