# mantis: the two commands of the quick start are `make demo` and `make test`.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: install install-dev demo test slow bench soak clean

install:
	bash scripts/install.sh

install-dev:
	bash scripts/install.sh --dev

## make demo: install, then run the end-to-end demo
demo: install
	$(PY) -m demo

## make test: install (with test tools), lint, then the default (non-slow) test suite
test: install-dev
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

## make slow: the tests marked slow as well
slow: install-dev
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

## make bench: speed and memory (results go to BENCHMARKS.md by hand, with the printed details)
bench: install
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_models.py --batch 3 --imperative --memory-saving
	$(PY) benchmarks/side_by_side.py --fidelities paper authors --rounds 2
	$(PY) benchmarks/bench_groupnorm.py
	$(PY) benchmarks/bench_upsample.py
	$(PY) benchmarks/profile_step.py
	$(PY) benchmarks/flops.py
	$(PY) benchmarks/bench_horovod.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_inference.py --model fractalresnet_tiny --sizes 512 1024 --stride 64
	$(PY) benchmarks/bench_engines.py

## make soak: 20 2-rank jobs of 20,000 small broadcasts each, then 50 consecutive 2-rank horovodrun starts of a
## tiny training; failures counted and their logs kept
soak: install
	$(PY) benchmarks/soak_broadcast.py --jobs 20
	$(PY) benchmarks/soak_horovod_start.py --starts 50

clean:
	rm -rf .venv .pytest_cache .ruff_cache nn/kernels/libmantis_ops.so
