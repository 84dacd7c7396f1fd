# make smoke  - first try: the whole study (01-07) on BloodMNIST with a small model (about 3 minutes)
# make study  - set everything up and run the default study (RetinaMNIST); prints the report path
# make test   - set everything up and run the test suite
# make sweep  - run (or resume) a parameter sweep: make sweep SPEC=params/sweeps/retinamnist_edit.yaml ARGS="--parallel 2"
# make benchmark - the cross-dataset benchmark over every dataset found locally (ARGS="--download" for all six)
# make publish - copy the benchmark's tables, page and provenance into reports/benchmark/ (tracked)
#                and regenerate the README's numbers from them: make publish SWEEP=reports/sweeps/benchmark
# make lab    - open the notebooks in JupyterLab (adds --allow-root when run as root)
# make lint   - ruff check + ruff format --check (code and notebooks); `make format` fixes the format
# make strip  - clear the notebooks' outputs before a commit (they are the source, committed clean)
# make browser - Chromium for the reports' browser check (make setup runs it; BROWSER=0 skips it)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# CPU-only machines: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu (same pins, ~200 MB
# instead of the CUDA build's ~6.5 GB); empty = the default index (the CUDA build, also runs on CPUs)
TORCH_INDEX ?=
SHARED_DIR := ../shared/data
SHARED_FILES := retinamnist.npz bloodmnist.npz organamnist.npz

.PHONY: setup browser smoke study sweep benchmark publish test lab lint format strip clean-runs
SPEC ?= params/sweeps/retinamnist_edit.yaml
SWEEP ?= reports/sweeps/benchmark

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, so that nothing later resolves another (multi-GB) build
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PINS) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# the library's bytecode, written once here: with PYTHONDONTWRITEBYTECODE set (as on the reference
# machine) every notebook kernel and CLI process would otherwise compile lib/ again (~2 s each)
setup: $(VENV)/.installed
	@mkdir -p data checkpoints reports
	@$(BIN)/python -m compileall -q lib
	@for f in $(SHARED_FILES); do \
		if [ -f $(SHARED_DIR)/$$f ] && [ ! -e data/$$f ]; then \
			ln -s "$$(realpath $(SHARED_DIR)/$$f)" data/$$f && echo "linked data/$$f -> $(SHARED_DIR)/$$f"; fi; done
	@$(MAKE) --no-print-directory browser

# Chromium for the reports' browser check (tests/test_study.py): installed from the Debian packages
# when this is root with apt (about 30 s); otherwise the command to run is printed, and the test
# skips saying so. BROWSER=0 skips this step.
browser:
	@if [ "$(BROWSER)" = "0" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Chromium for the browser check (apt-get install chromium)"; \
		(apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1)) \
		|| echo "could not install Chromium: the browser check will skip (sudo apt-get install chromium)"; \
	else echo "no Chromium: the browser check will skip; install it with: sudo apt-get install chromium"; fi

smoke: setup
	$(BIN)/vitedit --stage full --params params/base.yaml --params params/first_run.yaml --set progress=true --run-name smoke --timestamp --download $(ARGS)

study: setup
	$(BIN)/vitedit --stage full --params params/base.yaml --params params/retinamnist.yaml --download $(ARGS)

sweep: setup
	$(BIN)/vitedit-sweep run $(SPEC) $(ARGS)

benchmark: setup
	$(BIN)/vitedit-sweep run params/sweeps/benchmark.yaml --parallel 2 $(ARGS)

publish: setup
	$(BIN)/python -m vitedit.publish $(SWEEP)

# the suite's files spread over TEST_WORKERS processes (pytest-xdist; a file's tests stay in one
# process, so its module fixtures are built once); TEST_WORKERS=0 runs everything in this process
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

strip: setup
	$(BIN)/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

lab: setup
	cd notebooks && ../$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)
