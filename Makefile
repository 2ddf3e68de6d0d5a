# The two commands of the README. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.detopt-installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Main job. Until the trainer lands, it runs the post-processing benchmark (ours vs peers).
demo: $(STAMP)
	$(PY) benchmarks/bench_postprocess.py

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_postprocess.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_anchors.py
	$(PY) benchmarks/bench_augment.py
	$(PY) benchmarks/bench_train.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis .ruff_cache
