# The two commands of the README. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.detopt-installed

.PHONY: demo demo-quick test test-thorough bench lint browser postgres clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Main job: the whole optimize loop on the embedded data set -> runs/demo/report.html (10-12 min here).
demo: $(STAMP)
	$(VENV)/bin/detopt demo --out runs/demo

demo-quick: $(STAMP)
	$(VENV)/bin/detopt demo --quick --out runs/demo-quick

# Headless Chromium (Debian package) for the report's browser test; CI runs this before the tests.
browser:
	@command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell; }

# A throwaway PostgreSQL server for the tuner's distributed test (.ci/run starts its own):
#   eval "$(make -s postgres)" && make test
postgres:
	@echo "export DETOPT_POSTGRES_URL=$$(scripts/postgres.sh start /tmp/detopt-postgres)"

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# Local: hypothesis draws new examples each run, ten times as many (CI uses the derandomized profile).
test-thorough: $(STAMP)
	DETOPT_HYPOTHESIS=thorough $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_postprocess.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_anchors.py
	$(PY) benchmarks/bench_augment.py
	$(PY) benchmarks/bench_latency.py
	$(PY) benchmarks/bench_quantize.py --quick
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_prune.py --budget 3m
	$(PY) benchmarks/bench_tune.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis .ruff_cache
