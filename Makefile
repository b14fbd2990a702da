# Feedback Reactor — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# pytest-xdist workers for make test (most tests wait on servers, not the CPU); 0 runs it in one process
TEST_WORKERS ?= 2
REACTOR := $(VENV)/bin/reactor
MODELS ?= fixtures/tiny-models
# What `make install-gpu` puts in place of onnxruntime: the CUDA 13 build with CUDA and cuDNN from pip (its extras)
ORT_GPU ?= onnxruntime-gpu[cuda,cudnn]>=1.31

.PHONY: help install install-runtime install-gpu bench-gpu sql models fixtures demo test test-fast lint format bench bench-plumbing bench-nlp bench-e2e bench-writers bench-capture bench-pipeline soak opensearch-start opensearch-stop clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Runtime only (onnxruntime, tokenizers, numpy, psycopg...): what the demo and `reactor listen` need; no torch.
$(VENV)/.installed-runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.installed-runtime
	$(PY) -m pip install -q -e '.[dev,export,bench]'
	touch $@

install-runtime: $(VENV)/.installed-runtime  ## create .venv with the package only (runtime dependencies)

install: $(VENV)/.installed  ## create .venv with the package, export and dev extras

# onnxruntime and onnxruntime-gpu install the same `onnxruntime` package: both at once break each other, so the
# CPU build is removed first. A later `pip install -e .` brings onnxruntime back (a pyproject dependency): the
# reactor then says so in one line; run this target again.
install-gpu: $(VENV)/.installed-runtime  ## swap onnxruntime for onnxruntime-gpu + CUDA/cuDNN from pip (REACTOR_DEVICE=cuda)
	$(PY) -m pip uninstall -q -y onnxruntime onnxruntime-gpu
	$(PY) -m pip install -q '$(ORT_GPU)'
	$(PY) -m reactor.nlp.gpu

sql: install  ## install/upgrade schema and triggers (DATABASE_URL, or the embedded PostgreSQL)
	$(REACTOR) sql

fixtures: install  ## rebuild the committed tiny RANDOM-weight ONNX models in fixtures/ (tests check they match)
	$(REACTOR) export-models --tiny --quantize int8 --quantize int8-static --out fixtures/tiny-models
	$(REACTOR) export-models --tiny --task zero-shot --zero-shot-shape distilbart-mnli-12-1 \
		--quantize int8 --quantize int8-static --out fixtures/tiny-models-12-1

models: install  ## export the real models into models_onnx/ (needs the Hugging Face Hub)
	$(REACTOR) export-models --out models_onnx

demo: install-runtime  ## embedded PostgreSQL + schema + the committed tiny models + sample feedback + reactor + results
	$(PY) scripts/demo.py --models $(MODELS)

test: install  ## the whole suite: real PostgreSQL, onnxruntime, and OpenSearch when a JDK is present
	@if command -v java >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 && command -v unzip >/dev/null 2>&1; then \
		scripts/opensearch.sh start && export OPENSEARCH_TEST_URL=$$(scripts/opensearch.sh url); \
		$(PY) -m pytest -q -n $(TEST_WORKERS); status=$$?; scripts/opensearch.sh stop; exit $$status; \
	else \
		echo "NOTE: no JDK/curl/unzip: OpenSearch tests will be skipped"; $(PY) -m pytest -q -n $(TEST_WORKERS); \
	fi

test-fast: install  ## unit tests and the quick integration tests
	$(PY) -m pytest -q -n $(TEST_WORKERS) tests/unit tests/integration -m "not slow"

lint: install  ## ruff check + format check
	$(VENV)/bin/ruff check reactor tests scripts
	$(VENV)/bin/ruff format --check reactor tests scripts

format: install
	$(VENV)/bin/ruff format reactor tests scripts
	$(VENV)/bin/ruff check --fix reactor tests scripts

bench-plumbing: install  ## latency p50/p99 and rows/s with the stand-in model
	$(PY) scripts/bench_plumbing.py

bench-pipeline: install  ## K=2 batches in flight vs the serial loop, stand-in latency = claim + complete (~1 min)
	$(PY) scripts/bench_pipeline.py

bench-nlp: install  ## model throughput: transformers pipeline vs ONNX fp32/int8/int8-static (full-size random models)
	$(PY) scripts/bench_nlp.py --size full --texts 32 --baseline-texts 8  # first run builds the full random models (~15 min)

bench-e2e: install  ## end to end: reactor vs the original polling worker (latency, skipped rows, control, scaling, PNG)
	$(PY) scripts/bench_e2e.py

bench-writers: install  ## the writers' cost (pgbench tps at 1/8/32 clients, 3 states, ratios) + latency, burst drain, idle, control
	$(PY) scripts/bench_writers.py $(BENCH_WRITERS_ARGS)

bench-capture: install  ## trigger variants vs bare (pgbench, 8/32 clients): why the writers' ratio is what it is
	$(PY) scripts/bench_capture.py

# No install prerequisite: the GPU machine has no internet (BENCHMARKS.md "GPU": pack.sh, then python3 runs it).
bench-gpu:  ## GPU (issue 20): export, ONNX vs PyTorch bf16, fp16 drift, listen drain of 20,000 rows; ~8 min on an H200
	$(if $(wildcard $(PY)),$(PY),python3) scripts/bench_gpu.py $(BENCH_GPU_ARGS)
MINUTES ?= 60
soak: install  ## faults for MINUTES (60): kills, PostgreSQL/OpenSearch restarts, killer rows; then the checker (SOAK_ARGS)
	$(PY) scripts/soak.py --minutes $(MINUTES) --plot docs/bench/soak.png $(SOAK_ARGS)

bench: bench-plumbing bench-nlp bench-e2e bench-writers  ## all benchmarks (prints tables; see BENCHMARKS.md)

opensearch-start:  ## download (Maven Central) and start a local OpenSearch on 127.0.0.1:9200
	scripts/opensearch.sh start

opensearch-stop:
	scripts/opensearch.sh stop

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
