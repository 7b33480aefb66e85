# fashioncat: one command to set up and test, one command to serve.
PYTHON ?= python3
VENV   ?= .venv
SERVE_VENV ?= .venv-serve
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: help data install test check-sync nbtest notebooks pytest gate lint serve serve-install bench clean image-smoke load-test docs readme model

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

data:  ## the data: FASHIONCAT_DATA, ./data or Debian's dataset-fashion-mnist (installed with apt-get when root or sudo allow)
	@if [ -n "$$FASHIONCAT_DATA" ]; then if { ls "$$FASHIONCAT_DATA"/*ubyte* || ls "$$FASHIONCAT_DATA"/FashionMNIST/raw/*ubyte*; } >/dev/null 2>&1; \
	  then echo "data: $$FASHIONCAT_DATA (FASHIONCAT_DATA)"; else echo "data: FASHIONCAT_DATA=$$FASHIONCAT_DATA holds no Fashion-MNIST files: fix it, or unset it"; exit 1; fi; \
	elif { ls data/*ubyte* || ls data/FashionMNIST/raw/*ubyte*; } >/dev/null 2>&1; then echo "data: ./data"; \
	elif [ -d /usr/share/datasets/fashion-mnist ]; then echo "data: /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] && SUDO= || { sudo -n true 2>/dev/null && SUDO=sudo; }; }; then \
	  ($$SUDO apt-get install -y -q dataset-fashion-mnist || ($$SUDO apt-get update -q && $$SUDO apt-get install -y -q dataset-fashion-mnist)); \
	else echo "data: not found. Install it (sudo apt-get install -y dataset-fashion-mnist), point FASHIONCAT_DATA at the four IDX files, or let torchvision download it (README, Data)"; fi

$(VENV)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) -c "import nbdev, fastai, torch, onnxruntime; print('nbdev', nbdev.__version__, 'fastai', fastai.__version__, 'torch', torch.__version__)"
	touch $@

install: data $(VENV)/.installed  ## everything: training, notebooks, tests (torch installs from local disk here)

check-sync: install  ## fail if nbdev_export or nbdev_clean would change a file
	cd nbs && ../$(VENV)/bin/nbdev_export && ../$(VENV)/bin/nbdev_clean
	@git diff --exit-code --stat -- nbs fashioncat || (echo "nbdev_export/nbdev_clean changed files: run them and commit" && exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- nbs fashioncat)" || (git status --short -- nbs fashioncat; echo "untracked files from nbdev_export: commit them" && exit 1)
	$(PY) scripts/docs_figures.py --check
	$(PY) scripts/render_readme.py --check

docs: install  ## write the docs' figures from the committed JSON (reports, export, bench results), then README.md
	$(PY) scripts/docs_figures.py
	$(PY) scripts/render_readme.py

readme: install  ## README.md from nbs/index.ipynb (settings.ini's readme_nb)
	$(PY) scripts/render_readme.py

nbtest: install  ## notebook tests (fast; add FLAGS=slow for full training)
	cd nbs && OMP_NUM_THREADS=1 ../$(VENV)/bin/nbdev_test --flags "$(FLAGS)"

notebooks: install  ## run the notebooks and save their tables and plots in them (NB=02_training for one; ~4 min for all)
	$(PY) scripts/run_notebooks.py $(NB) && cd nbs && ../$(VENV)/bin/nbdev_clean

# Coverage of the package and the app by the pytest suites, floored a little under what it was when the floor was set:
# the modules the notebooks test (training, evaluation, quantization) count as uncovered here, and servers started in
# subprocesses are not counted. Raise it when coverage rises.
COV_FLOOR ?= 54
pytest: install  ## service and integration tests, with coverage (fails under COV_FLOOR percent)
	$(VENV)/bin/pytest -q tests --cov=fashioncat --cov=app --cov-report=term:skip-covered --cov-fail-under=$(COV_FLOOR)

gate: install  ## quality gate: the shipped ONNX model on the test set vs its committed report and the spec's floors (skips until exported)
	OMP_NUM_THREADS=1 $(VENV)/bin/fashioncat_gate

test: check-sync nbtest pytest gate  ## THE test command: install from scratch, check notebooks, run every test

model: install  ## rebuild the shipped model by configs/production/pipeline.yaml (resumes; ARGS=--dry_run shows the plan)
	$(VENV)/bin/fashioncat_pipeline --ship $(ARGS)

lint: install  ## ruff on hand-written code, and line length in the training notebooks
	$(VENV)/bin/ruff check app tests bench scripts && $(VENV)/bin/ruff format --check app tests bench scripts
	$(VENV)/bin/ruff check --select E501 nbs/0[0-4]*.ipynb nbs/06*.ipynb

$(SERVE_VENV)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install -q -e .
	touch $@

serve-install: $(SERVE_VENV)/.installed  ## the base install only: no torch

serve: serve-install  ## THE serve command: API on :8000, UI on :8000/ui (no login on 127.0.0.1), with the committed model
	FASHIONCAT_DATA_DIR=$${FASHIONCAT_DATA_DIR:-feedback} FASHIONCAT_UI_AUTH=$${FASHIONCAT_UI_AUTH:-$(if $(filter 127.0.0.1 localhost,$(HOST)),off,on)} \
	GRADIO_ANALYTICS_ENABLED=False MALLOC_ARENA_MAX=2 $(SERVE_VENV)/bin/uvicorn app.main:app --host $(HOST) --port $(PORT) --loop uvloop --http app.core.edge:GuardedHttpTools

image-smoke:  ## docker/Dockerfile's install steps in a fresh venv, then a smoke test of its server (no Docker needed)
	PYTHON=$(PYTHON) bash bench/docker_smoke.sh

load-test: install  ## the SLA load test on 127.0.0.1 (~12 min, wants an idle machine; QUICK=1 for a 1-minute run)
	GRADIO_ANALYTICS_ENABLED=False $(PY) bench/load_test.py $(if $(QUICK),--quick)

clean:  ## remove venvs and outputs (not the committed model)
	rm -rf $(VENV) $(SERVE_VENV) logs models/best_model models/final_model
