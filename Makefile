# recsys: every target installs what it needs first (the venv is created if missing).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/pytest
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYTHONHASHSEED ?= 0

.PHONY: install lock install-sizes demo test test-unit test-spark test-tf test-airflow test-serving test-faults test-notebook test-slow \
        lint typecheck check bench bench-features bench-floors bench-streaming bench-microbatch bench-serving bench-faults bench-privacy bench-forget bench-quality bench-train bench-index dist clean

# requirements.lock pins every package with its hashes (pip checks them); `make lock` regenerates it from
# requirements.txt (the known-good stack) and requirements-dev.txt.
$(STAMP): requirements.lock setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

lock: $(STAMP)  ## re-pin requirements.lock (with hashes) from requirements.txt and requirements-dev.txt
	$(BIN)/uv pip compile requirements.txt requirements-dev.txt --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements.lock

install-sizes: $(STAMP)  ## install each extra alone into a scratch venv and report its size (bench/results/install_sizes.json)
	$(PY) bench/install_sizes.py

install: $(STAMP)  ## create the venv and install the suite

demo: $(STAMP)  ## generate a sample and run the suite end to end (data under ./data)
	$(BIN)/recsys demo

test: $(STAMP)  ## the whole suite, every tier
	$(PYTEST) -q

test-unit: $(STAMP)
	$(PYTEST) -q -m unit
test-spark: $(STAMP)
	$(PYTEST) -q -m "spark and not slow"
test-tf: $(STAMP)
	$(PYTEST) -q -m tf
test-airflow: $(STAMP)
	$(PYTEST) -q -m airflow
test-serving: $(STAMP)  ## online store conformance (SQLite and a real Redis), projection, HTTP API
	$(PYTEST) -q -m serving
test-faults: $(STAMP)  ## real SIGKILLs and operator mistakes (tests/faults)
	$(PYTEST) -q -m faults
test-notebook: $(STAMP)
	$(PYTEST) -q -m notebook
test-slow: $(STAMP)
	$(PYTEST) -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check recsys_lib jobs bench tests airflow_dags
typecheck: $(STAMP)
	$(BIN)/mypy
check: lint typecheck

bench: $(STAMP)  ## ingestion benchmark at 1M and 10M events (writes bench/results/ingest.json)
	$(PY) bench/ingest.py --sizes 1000000 10000000

bench-features: $(STAMP)  ## full-refresh benchmark (needs bench/work from `make bench`)
	$(PY) bench/features.py --sizes 1000000 10000000

bench-floors: $(STAMP)  ## Spark's floors for ingest and refresh at 10M, to noop (needs bench-features first)
	$(PY) bench/floors.py --sizes 10000000

bench-streaming: $(STAMP)  ## incremental cost and freshness (needs bench-features first)
	$(PY) bench/streaming.py --sizes 10000000 --rate 2000 --seconds 120

bench-microbatch: $(STAMP)  ## where a steady 2,000-event micro-batch spends its time (no prerequisites)
	$(PY) bench/microbatch.py --batches 8 --warmup 2 --rate 2000

bench-privacy: $(STAMP)  ## pseudonym cost per id: Python (API), Arrow (micro-batch), Spark (batch ingest)
	$(PY) bench/privacy.py

bench-forget: $(STAMP)  ## seconds to forget 1 and 1,000 people from a 10M-event lake (builds it once)
	$(PY) bench/forget.py

bench-quality: $(STAMP)  ## two-tower vs tuned baselines over 5 seeds on synthetic, MovieLens and Taobao data
	$(PY) bench/quality.py

bench-faults: $(STAMP)  ## fault soak: stream, refresh, ingest, online sync SIGKILLed at random points; two writers; losses (target 0)
	$(PY) bench/faults.py

bench-serving: $(STAMP)  ## online store and API: reads, bulk load, open-loop HTTP load, event -> served (both backends)
	$(PY) bench/serving.py

bench-train: $(STAMP)  ## training throughput vs the TFRS tutorial, warm start vs full retrain
	$(PY) bench/train.py --events 150000 --epochs 3

bench-index: $(STAMP)  ## brute force vs ScaNN by catalogue size
	$(PY) bench/index.py --sizes 1000 10000 100000 500000

dist: $(STAMP)  ## wheel plus a zip for spark-submit --py-files
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w dist .
	rm -f dist/recsys_lib.zip && zip -qr dist/recsys_lib.zip recsys_lib -x '*__pycache__*'

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
