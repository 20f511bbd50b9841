#!/usr/bin/env bash
# Optional: build llama-cpp-python from source for the llama.cpp rows of
# `python -m evals.latency`. PyPI ships only the source (no CPU wheel), so
# this compiles llama.cpp: about 15 minutes on a 2-core machine. Never run by
# the tests; the benchmarks skip the llama.cpp rows with a note without it.
#
#   bash evals/install_llamacpp.sh            # default CPU build
#   LLAMACPP_VERSION=0.3.36 bash evals/install_llamacpp.sh
set -euo pipefail

# CPU only: native ISA (the numbers are for this machine), no GPU backends,
# no multimodal helper library (we only need the text model).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
spec="llama-cpp-python${LLAMACPP_VERSION:+==$LLAMACPP_VERSION}"

echo "building $spec with CMAKE_ARGS=$CMAKE_ARGS"
python -m pip install --no-binary llama-cpp-python --no-cache-dir "$spec"
python -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'ok')"
